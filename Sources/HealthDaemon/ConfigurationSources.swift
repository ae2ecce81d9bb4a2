import Glibc
import HealthCore

/// Reads what the configuration layers are made of: the credentials systemd passes in
/// `$CREDENTIALS_DIRECTORY`, and the config file. At start and at every reload.
public enum ConfigurationSources {
    /// The layers for these flags (values as given, by key), the config file at `configPath`
    /// and `environment`; with them, the notes of credentials systemd could not load, for the
    /// log ("credential database-url: absent: /etc/dreamnet-healthd/database-url does not exist").
    public static func layers(
        flags: [ConfigKey: String], configPath: String?, environment: [String: String]
    ) throws(ConfigurationError) -> (layers: ConfigurationLayers, credentialNotes: [String]) {
        var layers = ConfigurationLayers(environment: environment)
        var credentialNotes: [String] = []
        // systemd writes credentials 0440 with an ACL; libpq would refuse such a file as a
        // passfile, so the daemon reads them itself.
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            for name in ConfigurationLayers.credentialNames {
                let path = directory + "/" + name
                guard access(path, F_OK) == 0 else { continue }
                switch readTextFile(path) {
                case .success(let text):
                    switch ConfigurationLayers.credential(named: name, text: text) {
                    case .value(let value): layers.credentials[name] = value
                    case .note(let note): credentialNotes.append("credential \(name): \(note)")
                    }
                case .failure(let reason):
                    throw ConfigurationError(
                        code: .unreadableFile, key: nil, source: "credential \(name)",
                        message: "cannot read \(path): \(reason.reason)"
                    )
                }
            }
        }
        // Flags before the file: a config file error is scrubbed of the passwords they hold.
        for key in ConfigKey.allCases {
            layers.setFlag(key, flags[key])
        }
        if let configPath {
            let text: String
            switch readTextFile(configPath) {
            case .success(let contents): text = contents
            case .failure(let reason):
                throw ConfigurationError(
                    code: .unreadableFile, key: nil, source: "--config", message: "cannot read \(configPath): \(reason.reason)"
                )
            }
            try layers.parseFile(text, path: configPath)
        }
        return (layers, credentialNotes)
    }

    /// The whole file as UTF-8, or the reason it cannot be read (strerror's words).
    static func readTextFile(_ path: String) -> Result<String, ReadFailure> {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .failure(ReadFailure(String(cString: strerror(errno)))) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = read(descriptor, &chunk, chunk.count)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(ReadFailure(String(cString: strerror(errno))))
            }
            bytes.append(contentsOf: chunk[..<count])
            guard bytes.count <= 1 << 20 else { return .failure(ReadFailure("larger than 1 MiB")) }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(ReadFailure("not valid UTF-8"))
        }
        return .success(text)
    }

    struct ReadFailure: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }
}
