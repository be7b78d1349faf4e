//! `clip-wgpu`: CLIP embeddings and scores from the command line. A thin layer over
//! [`clip_wgpu::Clip`]; the commands live in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // usage errors exit 1 like every other fatal error (2 means "some inputs failed")
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    // serve shuts down gracefully on its own signal handling (tokio)
    #[cfg(feature = "server")]
    let serving = matches!(cli.command, Command::Serve(_));
    #[cfg(not(feature = "server"))]
    let serving = false;
    if !serving {
        cli::install_interrupt_handler();
    }
    let result = match cli.command {
        Command::Score(a) => cli::score(a),
        Command::Classify(a) => cli::classify(a),
        Command::Embed(a) => cli::embed(a),
        Command::Info(a) => cli::info(a),
        Command::Validate(a) => cli::validate(a),
        Command::Tune(a) => cli::tune(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => cli::serve(a),
    };
    match result {
        Ok(code) => code,
        // the reader went away (`| head`): stop quietly, as other command-line tools do
        Err(clip_wgpu::Error::Io { path, msg }) if path.as_os_str() == "<stdout>" && msg.contains("Broken pipe") => {
            ExitCode::SUCCESS
        }
        Err(_) if cli::interrupted() => {
            eprintln!("clip-wgpu: interrupted; no output written");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("clip-wgpu: error: {e}");
            ExitCode::from(1)
        }
    }
}
