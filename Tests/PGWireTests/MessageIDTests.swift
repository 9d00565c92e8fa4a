// Message type bytes and MessageTypeSet, the mask the scanner checks on every message.

import PGWire
import Testing

@Suite struct MessageIDTests {
    @Test func typeBytesAreThePostgreSQLLetters() {
        let backend: [(UInt8, Character)] = [
            (BackendMessageID.authentication, "R"), (BackendMessageID.backendKeyData, "K"),
            (BackendMessageID.commandComplete, "C"), (BackendMessageID.copyInResponse, "G"),
            (BackendMessageID.copyOutResponse, "H"), (BackendMessageID.copyBothResponse, "W"),
            (BackendMessageID.emptyQueryResponse, "I"), (BackendMessageID.errorResponse, "E"),
            (BackendMessageID.negotiateProtocolVersion, "v"), (BackendMessageID.noticeResponse, "N"),
            (BackendMessageID.notificationResponse, "A"), (BackendMessageID.parameterStatus, "S"),
            (BackendMessageID.readyForQuery, "Z"),
        ]
        let frontend: [(UInt8, Character)] = [
            (FrontendMessageID.bind, "B"), (FrontendMessageID.close, "C"), (FrontendMessageID.copyData, "d"),
            (FrontendMessageID.copyDone, "c"), (FrontendMessageID.copyFail, "f"), (FrontendMessageID.describe, "D"),
            (FrontendMessageID.execute, "E"), (FrontendMessageID.flush, "H"), (FrontendMessageID.functionCall, "F"),
            (FrontendMessageID.parse, "P"), (FrontendMessageID.passwordMessage, "p"), (FrontendMessageID.query, "Q"),
            (FrontendMessageID.sync, "S"), (FrontendMessageID.terminate, "X"),
        ]
        for (byte, letter) in backend + frontend {
            #expect(byte == letter.asciiValue, "\(letter)")
        }
    }

    @Test func setContainsExactlyWhatWasInsertedAcrossAllFourWords() {
        let members: [UInt8] = [0, 1, 63, 64, 65, 127, 128, 191, 192, 254, 255, UInt8(ascii: "Z")]
        let set = MessageTypeSet(members)
        for byte in UInt8.min...UInt8.max {
            #expect(set.contains(byte) == members.contains(byte), "byte \(byte)")
        }
    }

    @Test func emptySetContainsNothing() {
        let set = MessageTypeSet()
        #expect((UInt8.min...UInt8.max).allSatisfy { !set.contains($0) })
    }

    @Test func insertAddsOneMemberAndEqualityComparesMembers() {
        var set = MessageTypeSet([UInt8(ascii: "S")])
        #expect(set != MessageTypeSet([UInt8(ascii: "S"), UInt8(ascii: "Z")]))
        set.insert(UInt8(ascii: "Z"))
        set.insert(UInt8(ascii: "Z"))
        #expect(set == MessageTypeSet([UInt8(ascii: "Z"), UInt8(ascii: "S")]))
        #expect(set.contains(UInt8(ascii: "Z")))
        #expect(!set.contains(UInt8(ascii: "Z") + 64))
    }
}
