//! Running the fsfleet binary against the private sshd, for the CLI tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::sshd::TestSshd;

/// `fsfleet ARGS` in `dir`, with HOME there (no user's ~/.ssh leaks in).
pub fn fsfleet(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .expect("run fsfleet")
}

/// `dir/inventory.toml` with two hosts: `pbx-1` (the sshd, strict host key, a config dir with a
/// vars.xml) and `pbx-down` (a closed port on 127.0.0.1). Returns the config dir and that port.
pub fn reachable_and_down_inventory(sshd: &TestSshd, dir: &Path) -> (PathBuf, u16) {
    std::fs::write(dir.join("known_hosts"), sshd.known_hosts_line()).unwrap();
    let conf = dir.join("fsconf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("vars.xml"), "<include/>\n").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let inv = format!(
        "[defaults]\nuser = \"root\"\nidentity_file = \"{key}\"\nknown_hosts = \"known_hosts\"\nhost_key_policy = \"strict\"\nconnect_timeout = 3\n\n\
         [[hosts]]\nname = \"pbx-1\"\naddress = \"127.0.0.1\"\nport = {port}\nconf_dir = \"{conf}\"\n\n\
         [[hosts]]\nname = \"pbx-down\"\naddress = \"127.0.0.1\"\nport = {closed}\n",
        key = sshd.path("user_key").display(),
        port = sshd.port,
        conf = conf.display()
    );
    std::fs::write(dir.join("inventory.toml"), inv).unwrap();
    (conf, closed)
}
