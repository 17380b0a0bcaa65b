//! `heartbeat-server`: receives heartbeats from many clients, acknowledges them and reports who
//! is late, what was missed and who went away. The application is `heartbeat_net::server`.

fn main() -> std::process::ExitCode {
    heartbeat_net::server::main()
}
