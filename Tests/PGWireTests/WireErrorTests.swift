// WireError descriptions: what a closed connection's reason says about the offending message.

import PGWire
import Testing

@Suite struct WireErrorTests {
    @Test func descriptionsNameTheMessageTypeAndTheNumbers() {
        #expect(
            WireError.invalidLength(type: UInt8(ascii: "D"), length: 3).description
                == "invalid message length 3 for message type 'D'"
        )
        #expect(
            WireError.messageTooLarge(type: UInt8(ascii: "S"), length: 2000, limit: 1024).description
                == "message of 2000 bytes for message type 'S' exceeds the limit of 1024 bytes"
        )
        #expect(WireError.invalidLength(type: nil, length: -1).description == "invalid message length -1")
        #expect(
            WireError.leftoverBytes(what: "ParameterStatus", count: 2).description
                == "ParameterStatus has 2 unexpected trailing bytes")
        #expect(WireError.malformed("bad things").description == "bad things")
    }

    @Test func unprintableTypesAreShownInHex() {
        #expect(
            WireError.invalidLength(type: 0x01, length: 0).description
                == "invalid message length 0 for message type 0x1")
        #expect(
            WireError.invalidLength(type: 0xFF, length: 0).description
                == "invalid message length 0 for message type 0xff")
    }
}
