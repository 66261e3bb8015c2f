//! `certify`: per-input robustness figures and attacks for ONNX classifiers.
//!
//! Exit status: 0 on success, 2 on any error (one line on stderr naming the file and the
//! problem). Results go to stdout; progress and logs to stderr.

mod args;
mod certify_cmd;
mod checkpoint;
mod device;
mod export_cmd;
mod fit;
mod harden_cmd;
mod report;
mod train_args;
mod train_cmd;
mod train_engine;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// The reverse passes allocate and free buffers of tens of megabytes at a high rate; glibc's
/// allocator returns those to the kernel each time (a page fault per 4 KiB on the next use),
/// mimalloc keeps them: about 30% less time per exact Jacobian on the paper's network.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The command a command line asks for: the main job, or one of the subcommands named by the
/// first argument.
enum Command {
    Certify(args::Cli),
    Harden(train_args::HardenCli),
    Train(train_args::TrainCli),
    Export(export_cmd::ExportCli),
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let sub = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let rest = || std::iter::once(std::ffi::OsString::from(format!("certify {sub}"))).chain(argv[2..].iter().cloned());
    let command = match sub {
        "harden" => Command::Harden(train_args::HardenCli::parse_from(rest())),
        "train" => Command::Train(train_args::TrainCli::parse_from(rest())),
        "export" => Command::Export(export_cmd::ExportCli::parse_from(rest())),
        _ => Command::Certify(args::Cli::parse_from(&argv)),
    };
    let quiet = match &command {
        Command::Certify(a) => a.quiet,
        Command::Harden(a) => a.train.quiet,
        Command::Train(a) => a.train.quiet,
        Command::Export(a) => a.quiet,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if quiet { "warn" } else { "info" }))
        .format_timestamp(None)
        .format_target(false)
        .init();
    if matches!(command, Command::Harden(_) | Command::Train(_)) {
        // Training frees and reallocates the same buffers every step: keep them mapped.
        certify_cli::allocator::keep_freed_memory_for_reuse();
    }
    let result = match &command {
        Command::Certify(a) => certify_cmd::run(a),
        Command::Harden(a) => harden_cmd::run(a),
        Command::Train(a) => train_cmd::run(a),
        Command::Export(a) => export_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`certify … | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Library errors often repeat their source's text (and the file name we add as
            // context): keep each piece of the chain once.
            let mut msg = String::new();
            for part in e.chain().map(|c| c.to_string()) {
                if !msg.contains(&part) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&part);
                }
            }
            let _ = writeln!(std::io::stderr(), "certify: error: {}", msg.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
