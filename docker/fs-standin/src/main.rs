//! fs-standin: `serve`, `fs_cli` (also as argv[0]), `register`, `call`, `sip-raw`.

use fs_standin::config::Secret;
use fs_standin::sip::{self, CallOpts, CallOutcome, Outcome, RegisterOpts};
use std::time::Duration;

const USAGE: &str = "usage:
  fs-standin serve [--conf-dir DIR] [--log-dir DIR]
  fs-standin fs_cli [-H HOST] [-P PORT] [-p PASSWORD] [-x COMMAND] [PROFILE]
  fs-standin register --target HOST:PORT --user USER [--password PW | env SIP_PASSWORD]
                      [--domain D] [--timeout-ms N] [--attempts N]
  fs-standin call --target HOST:PORT --user USER [--password PW | env SIP_PASSWORD]
                  [--to NUMBER (9196)] [--hold-ms N (5000)] [--timeout-ms N (3000)]
      INVITE, hold the answered call, BYE; exit 0 the call was up until the BYE, 1 the
      switch had dropped it (481), 2 no answer in time, 3 not answered (the final status and
      its Reason header printed, e.g. `not answered: SIP/2.0 484 Address Incomplete (Reason:
      SIP;cause=608;text=\"INVALID_GATEWAY\")`) or error
  fs-standin -version   (as freeswitch: prints `FreeSWITCH version: ...`)
  fs-standin sip-raw --target HOST:PORT [--timeout-ms N]   < request
      sends stdin as ONE UDP datagram, byte for byte, and prints the first final answer;
      exit 0 answered, 2 no answer in time, 3 error";

/// Exit code for bad command lines (sysexits EX_USAGE), distinct from the SIP outcomes.
const EX_USAGE: i32 = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let code = if argv0 == "fs_cli" {
        fs_standin::fs_cli::main(&args[1..])
    } else {
        match args.get(1).map(String::as_str) {
            Some("fs_cli") => fs_standin::fs_cli::main(&args[2..]),
            Some("serve") => serve(&args[2..]),
            Some("register") => register(&args[2..]),
            Some("call") => call(&args[2..]),
            Some("sip-raw") => sip_raw(&args[2..]),
            // FreeSWITCH's src/switch.c: `-version` prints `FreeSWITCH version: %s\n` with
            // SWITCH_VERSION_FULL and exits 0 before it reads a config, opens a port or needs a
            // privilege (fsfleet's audit runs it as nobody).
            Some("-version") => {
                println!("FreeSWITCH version: {}", fs_standin::api::VERSION_FULL);
                0
            }
            _ => {
                eprintln!("{USAGE}");
                EX_USAGE
            }
        }
    };
    std::process::exit(code);
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("fs-standin: cannot start the async runtime: {e}");
            None
        }
    }
}

fn serve(args: &[String]) -> i32 {
    let layout = match fs_standin::serve::layout_from_args(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fs-standin serve: {e}");
            return EX_USAGE;
        }
    };
    let Some(rt) = runtime() else { return 1 };
    match rt.block_on(fs_standin::serve::run(layout)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fs-standin serve: {e}");
            1
        }
    }
}

fn register(args: &[String]) -> i32 {
    let mut target = None;
    let mut user = None;
    let mut password = None;
    let mut domain = None;
    let mut timeout_ms: u64 = 3000;
    let mut attempts: u32 = 1;
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (args[i].clone(), None),
        };
        let value = match inline {
            Some(v) => Some(v),
            None => {
                i += 1;
                args.get(i).cloned()
            }
        };
        let Some(value) = value else {
            eprintln!("fs-standin register: {name} needs a value\n{USAGE}");
            return EX_USAGE;
        };
        match name.as_str() {
            "--target" => target = Some(value),
            "--user" => user = Some(value),
            "--password" => password = Some(value),
            "--domain" => domain = Some(value),
            "--timeout-ms" | "--attempts" => {
                let Ok(n) = value.parse::<u64>() else {
                    eprintln!("fs-standin register: {name} wants a number, got {value:?}");
                    return EX_USAGE;
                };
                if name == "--attempts" {
                    attempts = n.clamp(1, 10_000) as u32;
                } else {
                    timeout_ms = n.max(1);
                }
            }
            other => {
                eprintln!("fs-standin register: unknown option {other:?}\n{USAGE}");
                return EX_USAGE;
            }
        }
        i += 1;
    }
    let password = password.or_else(|| std::env::var("SIP_PASSWORD").ok());
    let (Some(target), Some(user), Some(password)) = (target, user, password) else {
        eprintln!(
            "fs-standin register: --target, --user and a password (--password or env SIP_PASSWORD) are required\n{USAGE}"
        );
        return EX_USAGE;
    };
    let opts = RegisterOpts {
        target,
        user,
        password: Secret::new(password),
        domain,
        timeout: Duration::from_millis(timeout_ms),
    };
    let Some(rt) = runtime() else { return 3 };
    let mut code = 3;
    for _ in 0..attempts {
        code = match rt.block_on(sip::register(&opts)) {
            Ok(Outcome::Final { code, status_line }) => {
                println!("{status_line}");
                match code {
                    200 => 0,
                    403 => 1,
                    _ => 3,
                }
            }
            Ok(Outcome::Timeout) => {
                println!(
                    "timeout: no final answer from {} within {timeout_ms} ms",
                    opts.target
                );
                2
            }
            Err(e) => {
                eprintln!("fs-standin register: {e}");
                3
            }
        };
    }
    code
}

/// `call`: a phone's call to the switch, held, then hung up; the exit code says whether the
/// switch still had it when the BYE came.
fn call(args: &[String]) -> i32 {
    let (mut target, mut user, mut password) = (None, None, None);
    let mut to = sip::ECHO_EXTENSION.to_string();
    let (mut hold_ms, mut timeout_ms): (u64, u64) = (5000, 3000);
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (args[i].clone(), None),
        };
        let value = match inline {
            Some(v) => Some(v),
            None => {
                i += 1;
                args.get(i).cloned()
            }
        };
        let Some(value) = value else {
            eprintln!("fs-standin call: {name} needs a value\n{USAGE}");
            return EX_USAGE;
        };
        match name.as_str() {
            "--target" => target = Some(value),
            "--user" => user = Some(value),
            "--password" => password = Some(value),
            "--to" => to = value,
            "--hold-ms" | "--timeout-ms" => {
                let Ok(n) = value.parse::<u64>() else {
                    eprintln!("fs-standin call: {name} wants a number, got {value:?}");
                    return EX_USAGE;
                };
                if name == "--hold-ms" {
                    hold_ms = n;
                } else {
                    timeout_ms = n.max(1);
                }
            }
            other => {
                eprintln!("fs-standin call: unknown option {other:?}\n{USAGE}");
                return EX_USAGE;
            }
        }
        i += 1;
    }
    let password = password.or_else(|| std::env::var("SIP_PASSWORD").ok());
    let (Some(target), Some(user), Some(password)) = (target, user, password) else {
        eprintln!(
            "fs-standin call: --target, --user and a password (--password or env SIP_PASSWORD) are required\n{USAGE}"
        );
        return EX_USAGE;
    };
    let opts = CallOpts {
        target,
        user,
        password: Secret::new(password),
        to,
        hold: Duration::from_millis(hold_ms),
        timeout: Duration::from_millis(timeout_ms),
    };
    let Some(rt) = runtime() else { return 3 };
    match rt.block_on(sip::call(&opts)) {
        Ok(CallOutcome::Answered { bye: Some(200) }) => {
            println!("answered, held {hold_ms} ms, BYE: 200 OK");
            0
        }
        Ok(CallOutcome::Answered { bye: Some(code) }) => {
            println!(
                "answered, held {hold_ms} ms, BYE: {code} (the switch no longer had the call)"
            );
            1
        }
        Ok(CallOutcome::Answered { bye: None }) => {
            println!("answered, held {hold_ms} ms, BYE: no answer within {timeout_ms} ms");
            2
        }
        Ok(CallOutcome::NotAnswered {
            status_line,
            reason,
            ..
        }) => {
            match reason {
                Some(r) => println!("not answered: {status_line} (Reason: {r})"),
                None => println!("not answered: {status_line}"),
            }
            3
        }
        Ok(CallOutcome::Timeout) => {
            println!(
                "timeout: no final answer from {} within {timeout_ms} ms",
                opts.target
            );
            2
        }
        Err(e) => {
            eprintln!("fs-standin call: {e}");
            3
        }
    }
}

/// `sip-raw`: what a hostile SIP peer sends, exactly (tests craft folds, bare CRs and escapes
/// that no well-behaved client would produce).
fn sip_raw(args: &[String]) -> i32 {
    use std::io::Read;
    let mut target = None;
    let mut timeout_ms: u64 = 3000;
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (args[i].clone(), None),
        };
        let value = match inline {
            Some(v) => Some(v),
            None => {
                i += 1;
                args.get(i).cloned()
            }
        };
        let Some(value) = value else {
            eprintln!("fs-standin sip-raw: {name} needs a value\n{USAGE}");
            return EX_USAGE;
        };
        match name.as_str() {
            "--target" => target = Some(value),
            "--timeout-ms" => match value.parse::<u64>() {
                Ok(n) => timeout_ms = n.max(1),
                Err(_) => {
                    eprintln!("fs-standin sip-raw: --timeout-ms wants a number, got {value:?}");
                    return EX_USAGE;
                }
            },
            other => {
                eprintln!("fs-standin sip-raw: unknown option {other:?}\n{USAGE}");
                return EX_USAGE;
            }
        }
        i += 1;
    }
    let Some(target) = target else {
        eprintln!("fs-standin sip-raw: --target is required\n{USAGE}");
        return EX_USAGE;
    };
    let mut request = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut request) {
        eprintln!("fs-standin sip-raw: cannot read the request from stdin: {e}");
        return 3;
    }
    if request.is_empty() || request.len() > 65_507 {
        eprintln!(
            "fs-standin sip-raw: the request must be 1..65507 bytes (one UDP datagram), got {}",
            request.len()
        );
        return EX_USAGE;
    }
    let Some(rt) = runtime() else { return 3 };
    match rt.block_on(sip::send_raw(
        &target,
        &request,
        Duration::from_millis(timeout_ms),
    )) {
        Ok(Some(answer)) => {
            print!("{answer}");
            0
        }
        Ok(None) => {
            println!("timeout: no final answer from {target} within {timeout_ms} ms");
            2
        }
        Err(e) => {
            eprintln!("fs-standin sip-raw: {e}");
            3
        }
    }
}
