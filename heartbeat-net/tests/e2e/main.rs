//! End-to-end tests: the real `heartbeat-server` and `heartbeat-client` binaries (or the
//! embedding API, `heartbeat_net::embed`) on 127.0.0.1, with free ports, bounded waits and every
//! child killed at the end.

mod advice;
mod auth;
mod client_daemon;
mod client_settings;
mod concurrency;
mod ctl;
mod detector;
mod drift;
mod embed;
mod expect;
mod faults;
mod generate;
mod hello_only;
mod hooks;
mod hostile;
mod hostile_server;
mod legacy;
mod load;
mod metrics;
mod output;
mod prometheus;
mod reconnect;
mod seed;
mod shutdown;
mod state;
mod statuspage;
mod target;
mod threads;
mod tls;
mod util;
mod verdict;
