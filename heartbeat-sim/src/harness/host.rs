//! The software of the simulated hosts: the core's machines run by `heartbeat-net`'s driver
//! (the very loops the binaries run) over [`SimListener`] and [`SimConnector`], every event
//! recorded in the run's log.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use heartbeat_core::UnixTime;
use heartbeat_core::client::Client;
use heartbeat_core::config::ClientConfig;
use heartbeat_core::server::Server;
use heartbeat_net::driver::{self, Clock, ServerOptions};

use super::kernel::Kernel;
use super::log::{Log, Record, now};
use super::net::{PORT, SimConnector, SimListener};
use crate::scenario::Node;

async fn raised(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: the run is over, never raised.
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The server host: listens, runs the server until told to stop, then hands it back through
/// `slot` (for the report).
pub(crate) async fn server(
    incarnation: u32,
    server: Server,
    log: Arc<Mutex<Log>>,
    kernel: Arc<Mutex<Kernel>>,
    slot: Rc<RefCell<Option<Server>>>,
    stop: watch::Receiver<bool>,
) -> turmoil::Result {
    log.lock().expect("log lock").push(
        now(),
        Record::Started {
            node: Node::Server,
            incarnation,
        },
    );
    let listener = SimListener::bind(PORT).await?.with_kernel(kernel);
    let events = log.clone();
    let on_event = move |e: &heartbeat_core::server::Event, _| {
        events.lock().expect("log lock").push(
            now(),
            Record::Server {
                incarnation,
                event: e.clone(),
            },
        );
    };
    let options = ServerOptions::default();
    let server =
        driver::run_server(listener, server, options, unix_now, raised(stop), on_event).await?;
    *slot.borrow_mut() = Some(server);
    Ok(())
}

/// A client host: waits to be started, then runs a client until it is stopped.
pub(crate) async fn client(
    index: usize,
    incarnation: u32,
    config: ClientConfig,
    log: Arc<Mutex<Log>>,
    kernel: Arc<Mutex<Kernel>>,
    start: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> turmoil::Result {
    raised(start).await;
    log.lock().expect("log lock").push(
        now(),
        Record::Started {
            node: Node::Client(index),
            incarnation,
        },
    );
    let protocol = config.protocol();
    let client = Client::new(config, unix_now.now());
    let connector =
        SimConnector::new(index, incarnation, protocol, log.clone()).with_kernel(kernel);
    let events = log.clone();
    let on_event = move |e: &heartbeat_core::client::Event, _| {
        events.lock().expect("log lock").push(
            now(),
            Record::Client {
                client: index,
                incarnation,
                event: e.clone(),
            },
        );
    };
    let exit = driver::run_client(connector, client, unix_now, raised(stop), on_event).await;
    let failed = !exit.as_ref().is_ok_and(|e| e.is_success());
    let text = match exit {
        Ok(exit) => format!("exited: {exit:?}"),
        Err(e) => format!("driver failed: {e}"),
    };
    let mut log = log.lock().expect("log lock");
    log.push(
        now(),
        Record::Note {
            node: Node::Client(index),
            text,
        },
    );
    log.push(
        now(),
        Record::Exited {
            client: index,
            incarnation,
            failed,
        },
    );
    Ok(())
}

/// The simulated wall clock, read inside a host.
fn unix_now() -> UnixTime {
    let since = turmoil::since_epoch().expect("the wall clock is read inside a simulated host");
    UnixTime::from_duration(since)
}
