import AlertLog
import Logging
import ServiceLifecycle
import UnixSignals

/// SIGUSR1 reopens the alert log: logrotate's `create` + `postrotate … kill -USR1`.
final class AlertLogReopenService: Service {
    private let alertLog: AlertLog
    private let logger: Logger

    init(alertLog: AlertLog, logger: Logger) {
        self.alertLog = alertLog
        self.logger = logger
    }

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sigusr1).cancelOnGracefulShutdown() {
            alertLog.reopen()
            logger.info("alert log reopened", metadata: ["path": "\(alertLog.path)"])
        }
    }
}
