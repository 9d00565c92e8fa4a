// The TLS server context for clients, built from the configured certificate and key files.

import Crypto
import NIOSSL

/// A loaded certificate and key, with the certificate's `tls-server-end-point` hash for SCRAM channel binding.
struct ClientTLSContext: @unchecked Sendable, Equatable {  // NIOSSLContext is thread-safe once built.
    let context: NIOSSLContext
    /// RFC 5929's tls-server-end-point data; nil when the signature algorithm is not one the agent can map.
    let serverEndPoint: [UInt8]?

    /// Each load is a new context: equal only to itself.
    static func == (lhs: ClientTLSContext, rhs: ClientTLSContext) -> Bool { lhs.context === rhs.context }
}

enum ClientTLS {
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads the PEM certificate chain and private key; errors name the file that could not be used.
    static func makeContext(_ settings: TLSSettings) throws(LoadError) -> ClientTLSContext? {
        guard let certificateFile = settings.certificateFile, let keyFile = settings.keyFile else { return nil }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw LoadError(description: "cannot load the certificate from \(certificateFile): \(error)")
        }
        guard !chain.isEmpty else { throw LoadError(description: "no PEM certificate found in \(certificateFile)") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw LoadError(description: "cannot load the private key from \(keyFile): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        do {
            let context = try NIOSSLContext(configuration: configuration)
            return ClientTLSContext(context: context, serverEndPoint: (try? chain[0].toDERBytes()).flatMap(Self.serverEndPoint))
        } catch {
            throw LoadError(description: "the certificate in \(certificateFile) and the key in \(keyFile) cannot be used together: \(error)")
        }
    }
}

extension ClientTLS {
    /// The certificate's hash for channel binding: the hash of its signature algorithm, SHA-256 for MD5 and
    /// SHA-1 (RFC 5929 section 4.1, as PostgreSQL does); nil for algorithms without one (Ed25519, RSA-PSS).
    static func serverEndPoint(certificate der: [UInt8]) -> [UInt8]? {
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, ... }, signature }
        guard let certificate = DER.element(der, at: 0, tag: 0x30),
            let tbs = DER.element(der, at: certificate.start, tag: 0x30),
            let algorithm = DER.element(der, at: tbs.end, tag: 0x30),
            let oid = DER.element(der, at: algorithm.start, tag: 0x06)
        else { return nil }
        let rsa: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01]
        let ecdsa: [UInt8] = [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04]
        switch Array(der[oid.start..<oid.end]) {
        case rsa + [0x04], rsa + [0x05], rsa + [0x0B], ecdsa + [0x01], ecdsa + [0x03, 0x02]:
            return Array(SHA256.hash(data: der))
        case rsa + [0x0C], ecdsa + [0x03, 0x03]:
            return Array(SHA384.hash(data: der))
        case rsa + [0x0D], ecdsa + [0x03, 0x04]:
            return Array(SHA512.hash(data: der))
        default:
            return nil
        }
    }
}

/// Just enough DER to find a certificate's signature algorithm.
enum DER {
    /// The element at `index` if its tag is `tag`: where its content starts and ends.
    static func element(_ der: [UInt8], at index: Int, tag: UInt8) -> (start: Int, end: Int)? {
        guard index + 2 <= der.count, der[index] == tag else { return nil }
        var length = Int(der[index + 1])
        var start = index + 2
        if length & 0x80 != 0 {
            let count = length & 0x7F
            guard (1...4).contains(count), start + count <= der.count else { return nil }
            length = 0
            for offset in 0..<count { length = length << 8 | Int(der[start + offset]) }
            start += count
        }
        guard length >= 0, start + length <= der.count else { return nil }
        return (start, start + length)
    }
}
