//! The hidden `--generate` flag: each binary prints its man page and its bash, zsh and fish
//! completions from its own clap definition (what the Debian package installs).

use std::process::Command;

use crate::util::{CLIENT, SERVER};

const LOAD: &str = env!("CARGO_BIN_EXE_heartbeat-load");

/// Runs `bin --generate what`; its stdout, after checking it exited 0.
fn generate(bin: &str, what: &str) -> String {
    let out = Command::new(bin)
        .args(["--generate", what])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} --generate {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_binary_prints_its_man_page_and_completions() {
    for (bin, name, flag) in [
        (SERVER, "heartbeat-server", "state-dir"),
        (CLIENT, "heartbeat-client", "auth-key-file"),
        (LOAD, "heartbeat-load", "source-addrs"),
    ] {
        let man = generate(bin, "man");
        assert!(man.contains(&format!(".TH {name} 1")), "{name}: {man}");
        // roff escapes the dashes of the flags.
        let roff_flag = format!("\\-\\-{}", flag.replace('-', "\\-"));
        assert!(man.contains(&roff_flag), "{name} man page lacks --{flag}");
        assert!(
            !man.contains("generate"),
            "{name} man page shows the hidden flag"
        );
        if name == "heartbeat-server" {
            // The subcommands are sections of the one page.
            assert!(
                man.contains(".SH \"HEARTBEAT-SERVER CTL SILENCE\""),
                "{man}"
            );
            assert!(man.contains("\\-\\-until"), "the ctl silence flags: {man}");
        }
        for shell in ["bash", "zsh", "fish"] {
            let script = generate(bin, shell);
            assert!(script.contains(name), "{name} {shell}: {script}");
            assert!(
                script.contains(flag),
                "{name} {shell} completion lacks --{flag}"
            );
        }
        // It is a command of its own, not a flag to mix with a run.
        let out = Command::new(bin)
            .args(["--generate", "man", "--port", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
    }
}
