import Logging
import ServiceLifecycle
import UnixSignals

/// SIGUSR2 asks for a probe now (`systemctl kill -s USR2 dreamnet-healthd`): with
/// `scale_to_zero`, a wake of a database let sleep, to prove that it starts; otherwise the
/// next probe is brought forward.
final class ProbeRequestService: Service {
    private let probe: ProbeService
    private let logger: Logger

    init(probe: ProbeService, logger: Logger) {
        self.probe = probe
        self.logger = logger
    }

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sigusr2).cancelOnGracefulShutdown() {
            logger.info("a probe was asked for (SIGUSR2)")
            probe.requestProbe()
        }
    }
}
