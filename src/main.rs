//! The `raylet` binary: parse the CLI, set up logging, run the command. No logic here.

use clap::Parser;
use raylet::cli::args::{Cli, Command};

/// mimalloc instead of glibc malloc: the RPC paths allocate small short-lived buffers per
/// request, and glibc's free/consolidate showed up as ~8% of shard 0's cycles in the lease
/// bench.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Start(args) => start(&args),
        Command::Status(args) => {
            raylet::telemetry::init_cli();
            report(raylet::cli::status::run(&args))
        }
        Command::Stop(args) => {
            raylet::telemetry::init_cli();
            report(raylet::cli::stop::run(&args))
        }
        Command::Worker(args) => {
            raylet::telemetry::init_cli();
            raylet::worker::run(&args)
        }
        Command::Agent(args) => {
            raylet::telemetry::init_cli();
            raylet::cli::agent::run(&args)
        }
        Command::Memory(args) => {
            raylet::telemetry::init_cli();
            report(raylet::cli::memory::run(&args))
        }
        Command::Object(args) => {
            raylet::telemetry::init_cli();
            report(raylet::cli::object::run(&args.command))
        }
    };
    std::process::exit(code);
}

fn report(r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("raylet: {e}");
            1
        }
    }
}

fn start(args: &raylet::cli::args::StartArgs) -> i32 {
    let mut cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => return report(Err(e)),
    };
    if let Err(e) = raylet::cli::session::prepare(&mut cfg, args.auth_token_file.as_deref()) {
        return report(Err(e));
    }
    if let Err(e) = cfg.validate() {
        return report(Err(e.to_string()));
    }
    raylet::telemetry::init_node(&cfg.logs_dir());
    raylet::shard::bootstrap::end_process_on_panic();
    raylet::shard::bootstrap::run(cfg)
}
