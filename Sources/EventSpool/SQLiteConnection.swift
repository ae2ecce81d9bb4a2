import CSQLite

/// One connection to an SQLite file: the few typed calls the spool needs over the system
/// library, and nothing else.
///
/// Not thread-safe by design (opened with `SQLITE_OPEN_NOMUTEX`): its owner serialises every
/// call. Statements are prepared once per SQL text and kept until the connection closes.
final class SQLiteConnection {
    private let handle: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    enum Mode {
        case readWriteCreate
        case readOnly
    }

    init(path: String, mode: Mode) throws(SQLiteError) {
        var handle: OpaquePointer?
        let flags = switch mode {
        case .readWriteCreate: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        case .readOnly: SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
        }
        let code = sqlite3_open_v2(path, &handle, flags, nil)
        guard let handle else { throw SQLiteError(code: code, message: "cannot allocate a connection") }
        guard code == SQLITE_OK else {
            let error = SQLiteError(code: sqlite3_extended_errcode(handle), message: String(cString: sqlite3_errmsg(handle)))
            sqlite3_close_v2(handle)
            throw error
        }
        self.handle = handle
        sqlite3_extended_result_codes(handle, 1)
        // Opening reads nothing: read the header and the schema now, so that a file that is not
        // a database says so here.
        try execute("SELECT * FROM sqlite_master LIMIT 1")
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        // The last connection to a WAL database checkpoints it into the main file on close.
        sqlite3_close_v2(handle)
    }

    /// Runs one or more statements that return nothing of interest.
    func execute(_ sql: String) throws(SQLiteError) {
        let code = sqlite3_exec(handle, sql, nil, nil, nil)
        guard code == SQLITE_OK else { throw error(code) }
    }

    /// Runs one statement with its arguments; rows it returns are ignored.
    func run(_ sql: String, _ arguments: SQLiteValue...) throws(SQLiteError) {
        try withStatement(sql, arguments) { statement throws(SQLiteError) in
            while try step(statement) {}
        }
    }

    /// Every row of a query, each column by name.
    func rows(_ sql: String, _ arguments: SQLiteValue...) throws(SQLiteError) -> [SQLiteRow] {
        var rows: [SQLiteRow] = []
        try forEachRow(sql, arguments) { row in rows.append(row) }
        return rows
    }

    /// Calls `body` with each row of a query, as it is read: a row read before a damaged page
    /// is handed on before the error that stops the scan is thrown.
    func forEachRow(_ sql: String, _ arguments: [SQLiteValue] = [], _ body: (SQLiteRow) -> Void) throws(SQLiteError) {
        try withStatement(sql, arguments) { statement throws(SQLiteError) in
            let count = sqlite3_column_count(statement)
            let names = (0..<count).map { sqlite3_column_name(statement, $0).map { String(cString: $0) } ?? "" }
            while try step(statement) {
                body(SQLiteRow(names: names, values: (0..<count).map { column(statement, $0) }))
            }
        }
    }

    /// The first column of the first row, if there is a row.
    func value(_ sql: String, _ arguments: SQLiteValue...) throws(SQLiteError) -> SQLiteValue? {
        try withStatement(sql, arguments) { statement throws(SQLiteError) in
            try step(statement) ? column(statement, 0) : nil
        }
    }

    /// The first column of every row.
    func values(_ sql: String, _ arguments: SQLiteValue...) throws(SQLiteError) -> [SQLiteValue] {
        try withStatement(sql, arguments) { statement throws(SQLiteError) in
            var values: [SQLiteValue] = []
            while try step(statement) { values.append(column(statement, 0)) }
            return values
        }
    }

    var lastInsertedRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Runs `body` in a transaction: committed if it returns, rolled back if it throws.
    /// `BEGIN IMMEDIATE` for writes, so that the write lock is taken before anything is read.
    func transaction<T>(writing: Bool, _ body: () throws -> T) throws -> T {
        try execute(writing ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED")
        let result: T
        do {
            result = try body()
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
        do {
            // With synchronous=FULL in WAL mode, COMMIT returns after the WAL is fsynced.
            try execute("COMMIT")
        } catch {
            // A failed COMMIT can leave the transaction open (SQLITE_BUSY, I/O errors).
            if sqlite3_get_autocommit(handle) == 0 { try? execute("ROLLBACK") }
            throw error
        }
        return result
    }

    // MARK: - Statements

    private func withStatement<T>(
        _ sql: String, _ arguments: [SQLiteValue], _ body: (OpaquePointer) throws(SQLiteError) -> T
    ) throws(SQLiteError) -> T {
        let statement = try prepared(sql)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        for (index, argument) in arguments.enumerated() {
            try bind(argument, to: statement, at: Int32(index + 1))
        }
        return try body(statement)
    }

    private func prepared(_ sql: String) throws(SQLiteError) -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else { throw error(code) }
        statements[sql] = statement
        return statement
    }

    /// `true` with a row to read, `false` when done.
    private func step(_ statement: OpaquePointer) throws(SQLiteError) -> Bool {
        switch sqlite3_step(statement) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code: throw error(code)
        }
    }

    private func bind(_ value: SQLiteValue, to statement: OpaquePointer, at index: Int32) throws(SQLiteError) {
        let code: Int32 = switch value {
        case .null: sqlite3_bind_null(statement, index)
        case .integer(let integer): sqlite3_bind_int64(statement, index, integer)
        case .real(let real): sqlite3_bind_double(statement, index, real)
        case .text(let text): sqlite3_bind_text(statement, index, text, -1, Self.transient)
        case .blob(let bytes):
            bytes.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), Self.transient) }
        }
        guard code == SQLITE_OK else { throw error(code) }
    }

    /// SQLite copies the bytes before the call returns (`SQLITE_TRANSIENT`, a macro Swift cannot import).
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    private func column(_ statement: OpaquePointer, _ index: Int32) -> SQLiteValue {
        switch sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER:
            return .integer(sqlite3_column_int64(statement, index))
        case SQLITE_FLOAT:
            return .real(sqlite3_column_double(statement, index))
        case SQLITE_TEXT:
            guard let text = sqlite3_column_text(statement, index) else { return .null }
            let count = Int(sqlite3_column_bytes(statement, index))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(statement, index))
            guard count > 0, let blob = sqlite3_column_blob(statement, index) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: blob, count: count)))
        default:
            return .null
        }
    }

    private func error(_ code: Int32) -> SQLiteError {
        SQLiteError(code: sqlite3_extended_errcode(handle), message: String(cString: sqlite3_errmsg(handle)))
    }
}

/// A value as SQLite stores it.
enum SQLiteValue: Equatable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    init(_ text: String?) { self = text.map(SQLiteValue.text) ?? .null }
    init(_ integer: Int64?) { self = integer.map(SQLiteValue.integer) ?? .null }
    init(_ integer: Int) { self = .integer(Int64(integer)) }
    init(_ flag: Bool) { self = .integer(flag ? 1 : 0) }

    /// Text, or a blob that is valid UTF-8; `nil` for anything else. Damage can change a
    /// column's type, so nothing here assumes it.
    var text: String? {
        switch self {
        case .text(let text): text
        case .blob(let bytes): String(validating: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// An integer, or a real that fits one.
    var integer: Int64? {
        switch self {
        case .integer(let integer): integer
        case .real(let real) where real >= Double(Int64.min) && real < Double(Int64.max): Int64(real)
        default: nil
        }
    }
}

/// One row of a query, its columns by name.
struct SQLiteRow {
    var names: [String]
    var values: [SQLiteValue]

    /// The column's value; `nil` if the query has no such column.
    subscript(_ name: String) -> SQLiteValue? {
        names.firstIndex(of: name).map { values[$0] }
    }
}

/// What SQLite reported: the extended result code and its message.
struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The extended result code (`SQLITE_IOERR_FSYNC`, say).
    var code: Int32
    var message: String

    /// The primary result code (`SQLITE_IOERR`).
    var primaryCode: Int32 { code & 0xff }

    static func notADatabase(_ message: String) -> SQLiteError { SQLiteError(code: SQLITE_NOTADB, message: message) }
    static func corrupt(_ message: String) -> SQLiteError { SQLiteError(code: SQLITE_CORRUPT, message: message) }
    static func other(_ message: String) -> SQLiteError { SQLiteError(code: SQLITE_ERROR, message: message) }

    /// The file is not a database, or is one with damaged pages.
    var isDamagedFile: Bool { primaryCode == SQLITE_CORRUPT || primaryCode == SQLITE_NOTADB }

    /// `10 (disk I/O error): disk I/O error`: the primary code, what it means, and the message.
    var description: String {
        "\(primaryCode) (\(String(cString: sqlite3_errstr(primaryCode)))): \(message)"
    }
}
