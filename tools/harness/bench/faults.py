"""The faults the deadline and detection parts inject: a listener that never answers, and a relay
to PostgreSQL that can hang every session's query on a stopped backend or turn into a black hole."""
import os, signal, socket, struct, threading

class BlackHole:
    """Accepts TCP connections (the kernel does) and never answers."""
    def __init__(self):
        self.socket = socket.socket(); self.socket.bind(("127.0.0.1", 0)); self.socket.listen(1024)
        self.port = self.socket.getsockname()[1]
    def close(self):
        self.socket.close()

class Relay:
    """A TCP relay to PostgreSQL. In `hang` mode it stops each session's backend (SIGSTOP) the
    moment it is ready for queries, before the client hears so: every query then hangs on a
    real, stopped backend; the backend is resumed when the client hangs up. In `blackhole` mode
    new connections are accepted and never answered."""
    def __init__(self, pg_port, mode="forward"):
        self.pg_port, self.mode = pg_port, mode
        self.listener = socket.socket(); self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0)); self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.held = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "blackhole":
                self.held.append(client)
                continue
            threading.Thread(target=self.session, args=(client,), daemon=True).start()

    def session(self, client):
        try:
            server = socket.create_connection(("127.0.0.1", self.pg_port))
        except OSError:
            # The server is down (part 4 stops it): the client sees the connection closed.
            client.close()
            return
        state = {"backend": None}
        def upstream():
            try:
                while data := client.recv(65536):
                    server.sendall(data)
            except OSError:
                pass
            if state["backend"]:
                os.kill(state["backend"], signal.SIGCONT)
            for s in (server, client):
                try: s.shutdown(socket.SHUT_RDWR)
                except OSError: pass
        threading.Thread(target=upstream, daemon=True).start()
        buffer, ready, first = b"", False, True
        try:
            while data := server.recv(65536):
                if ready or self.mode != "hang":
                    client.sendall(data); continue
                buffer += data
                if first and buffer[:1] in (b"N", b"S") and len(buffer) >= 1:
                    client.sendall(buffer[:1]); buffer = buffer[1:]
                first = False
                out = b""
                while len(buffer) >= 5:
                    kind, length = buffer[:1], struct.unpack("!i", buffer[1:5])[0]
                    if len(buffer) < 1 + length: break
                    message, buffer = buffer[:1 + length], buffer[1 + length:]
                    if kind == b"K":
                        state["backend"] = struct.unpack("!i", message[5:9])[0]
                    if kind == b"Z" and state["backend"]:
                        os.kill(state["backend"], signal.SIGSTOP)
                        ready = True
                    out += message
                client.sendall(out + (buffer if ready else b""))
                if ready: buffer = b""
        except OSError:
            pass

    def forward(self):
        """Back to relaying; the connections the black hole held are closed."""
        self.mode = "forward"
        for s in self.held:
            s.close()
        self.held.clear()

    def close(self):
        self.listener.close()
        for s in self.held: s.close()
