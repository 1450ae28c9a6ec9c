//! `inference-sim`: serves one or more simulated vLLM pods on consecutive ports.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use inference_sim::{start_pods, PodConfig};

#[derive(Parser)]
#[command(
    name = "inference-sim",
    version,
    about = "A vLLM-compatible model-server simulator"
)]
struct Cli {
    /// Number of independent pods, on consecutive ports from --base-port.
    #[arg(long, default_value_t = 1)]
    pods: usize,

    /// Port of the first pod (0: each pod picks a free port).
    #[arg(long = "base-port", visible_alias = "port", default_value_t = 8000)]
    base_port: u16,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Tokio worker threads; 1 runs every pod on a single core.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    #[command(flatten)]
    config: PodConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = check(&cli) {
        eprintln!("inference-sim: {message}");
        return ExitCode::from(2);
    }
    let mut builder = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cli.threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("inference-sim: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

fn check(cli: &Cli) -> Result<(), String> {
    if cli.pods == 0 {
        return Err("--pods must be at least 1".into());
    }
    if cli.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if cli.base_port != 0 && usize::from(cli.base_port) + cli.pods - 1 > usize::from(u16::MAX) {
        return Err(format!(
            "--base-port {} leaves no room for {} pods",
            cli.base_port, cli.pods
        ));
    }
    cli.config.validate()
}

async fn run(cli: Cli) -> ExitCode {
    let addrs: Vec<SocketAddr> = (0..cli.pods)
        .map(|i| {
            let port = if cli.base_port == 0 {
                0
            } else {
                cli.base_port + i as u16
            };
            SocketAddr::new(cli.host, port)
        })
        .collect();
    let pods = match start_pods(cli.config, &addrs).await {
        Ok(pods) => pods,
        Err(error) => {
            eprintln!("inference-sim: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    for pod in &pods {
        let _ = writeln!(
            stdout,
            "inference-sim: pod {} listening on {}",
            pod.index(),
            pod.addr()
        );
    }
    for pod in &pods {
        if let (Some(publish), Some(replay)) =
            (pod.kv_events_endpoint(), pod.kv_events_replay_endpoint())
        {
            let _ = writeln!(
                stdout,
                "inference-sim: pod {} kv events on {publish} replay {replay}",
                pod.index()
            );
        }
    }
    let _ = stdout.flush();
    drop(stdout);
    wait_for_signal().await;
    pods.iter().for_each(|pod| pod.stop());
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
