// The TLS server context for clients, built from the configured certificate and key files.

import NIOSSL

enum ClientTLS {
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads the PEM certificate chain and private key; errors name the file that could not be used.
    static func makeContext(_ settings: TLSSettings) throws(LoadError) -> NIOSSLContext? {
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
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw LoadError(description: "the certificate in \(certificateFile) and the key in \(keyFile) cannot be used together: \(error)")
        }
    }
}
