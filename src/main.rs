//! The `samlgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use samlgate::cli;
use samlgate::config::Config;

/// pingora allocates and frees a buffer set per request; glibc's malloc spends a tenth of the
/// proxy's CPU on that (perf), mimalloc a fraction of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "samlgate",
    version,
    about = "A reverse-proxy SSO gateway: SAML 2.0 login, just-in-time users, identity headers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config, the IdP metadata, TLS files and the store; exit non-zero on error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the SP metadata XML to give to the IdP.
    Metadata {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage users: list, show, activate, deactivate, disable, delete, groups, export, import.
    Users {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Print the admin API's JSON answer.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: cli::UsersCmd,
    },
    /// Groups and their members.
    Groups {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: cli::GroupsCmd,
    },
    /// Live sessions: list and revoke.
    Sessions {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: cli::SessionsCmd,
    },
    /// The audit log: who was created, changed, refused, by whom.
    Audit {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: cli::AuditArgs,
    },
    /// Run a self-contained demo: gateway, development IdP and echo backend on 127.0.0.1.
    Demo {
        /// Where the demo writes its generated config, the IdP metadata and the store.
        #[arg(long, default_value = "samlgate-demo")]
        data_dir: PathBuf,
        /// Gateway port; the IdP uses the next port, the backend the one after, the admin API the fourth.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn main() -> ExitCode {
    samlgate::logging::init(samlgate::logging::LogFormat::Text);
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("samlgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The admin commands need the gateway's config (for the admin address, token and store).
fn need(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    config
        .or_else(|| std::env::var_os("SAMLGATE_CONFIG").map(PathBuf::from))
        .ok_or_else(|| anyhow::anyhow!("--config <file> is required (or set SAMLGATE_CONFIG)"))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            samlgate::logging::init(cfg.log_format);
            let app = samlgate::server::App::build(cfg)?;
            samlgate::server::run(app, Vec::new())?;
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            for idp in &cfg.idps {
                samlgate::saml::ServiceProvider::new(&cfg, idp)?;
            }
            // Every upstream name resolves (as the gateway will need at start).
            samlgate::proxy::Live::new(std::sync::Arc::new(cfg.clone()))?;
            println!("{}: ok", config.display());
        }
        Command::Metadata { config } => {
            let cfg = Config::load(&config)?;
            // Our metadata is the same whichever IdP it is handed to.
            let sp = samlgate::saml::ServiceProvider::new(&cfg, &cfg.idps[0])?;
            print!("{}", sp.sp_metadata_xml());
        }
        Command::Users { config, json, cmd } => {
            cli::run(&need(config)?, cli::AdminCommand::Users(cmd), json)?
        }
        Command::Groups { config, json, cmd } => {
            cli::run(&need(config)?, cli::AdminCommand::Groups(cmd), json)?
        }
        Command::Sessions { config, json, cmd } => {
            cli::run(&need(config)?, cli::AdminCommand::Sessions(cmd), json)?
        }
        Command::Audit { config, json, args } => {
            cli::run(&need(config)?, cli::AdminCommand::Audit(args), json)?
        }
        Command::Demo { data_dir, port } => {
            if port > u16::MAX - 3 {
                anyhow::bail!(
                    "--port {port} leaves no room for the IdP and backend ports after it"
                );
            }
            samlgate::demo::run(&data_dir, port)?;
        }
    }
    Ok(())
}
