//! Command line: `neurolink proxy start`, `neurolink config check`, `neurolink auth …`. Flags and aliases follow the
//! seed (NeuroLink) so existing scripts keep working.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use neurolink_shared::config::{self, EnvSource, Strategy};
use neurolink_shared::paths::Paths;

use crate::daemon::{self, StartOptions};

pub mod auth;
mod control;
mod doctor;
pub mod output;

#[derive(Parser, Debug)]
#[command(
    name = "neurolink",
    version = env!("NEUROLINK_VERSION"),
    about = "A local proxy that pools Claude accounts for Claude Code",
    long_about = "A local proxy that pools several Anthropic accounts (API keys and Claude Pro/Max logins) \
behind one address. Point Claude Code at it with ANTHROPIC_BASE_URL; it picks an account per request \
and moves to the next one on rate limits, auth failures and outages.\n\n\
Files live in $NEUROLINK_HOME (default ~/.neurolink): proxy-config.yaml, tokens.json.",
    after_help = "Start here:\n  neurolink proxy start                 run the proxy on 127.0.0.1:55669\n  \
neurolink config check                validate the config and print what is in effect\n  \
ANTHROPIC_BASE_URL=http://127.0.0.1:55669 claude"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print results (and errors) as JSON on stdout, for scripts
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run and manage the proxy.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage accounts: login, list, refresh, enable, disable, log out, clean up.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Check config, accounts, daemon, Claude settings, service, port and logs; explain each fix.
    #[command(
        after_help = "Exit status: 0 when nothing is wrong, 1 when a check finds a problem.\n\n\
Examples:\n  neurolink doctor\n  neurolink doctor --network   # also reach Anthropic, as the proxy would"
    )]
    Doctor {
        /// Also connect to each Anthropic base URL the accounts use, through the same proxies
        /// (HTTPS_PROXY...) and trusted authorities (server.caFile) as the proxy, and report
        /// what answers: catches a TLS-inspecting network or a proxy that is needed but not set.
        #[arg(long)]
        network: bool,
    },
    /// Try it all with simulated accounts: a daemon, traffic and the dashboard; nothing of yours
    /// is touched, and quitting removes everything.
    #[command(
        long_about = "Try it all with simulated accounts, touching nothing of yours.\n\n\
A temporary NEUROLINK_HOME gets three simulated accounts (two Claude logins whose 5h/7d quotas \
move, one API key); a simulated Anthropic runs inside this process on 127.0.0.1; a real daemon \
serves steady traffic against it, with now and then a 429, a 529 and a 401 that makes it refresh \
a token; the dashboard opens on it. Quit the dashboard (q) and the daemon stops and the folder \
is removed. Claude Code's settings are never changed.",
        after_help = "Examples:\n  neurolink demo\n  neurolink demo --headless 30   # no screen: run 30 s, print what happened"
    )]
    Demo {
        /// Run this many seconds without the dashboard, then print a summary
        #[arg(long, value_name = "SECS")]
        headless: Option<u64>,
    },
    /// Open the dashboard of the running daemon (the same as `neurolink-tui`).
    #[command(
        after_help = "Keys: ? in the dashboard. Without a daemon it says so, starts one on `s`, and connects \
when one appears."
    )]
    Tui {
        /// The daemon's control socket [default: $NEUROLINK_HOME/daemon.sock]
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Send one JSON-RPC call to the running daemon and print the result (see docs/ipc.md).
    #[command(
        after_help = "Examples:\n  neurolink rpc status\n  neurolink rpc accounts.reset '{\"label\":\"work\"}'\n  \
neurolink rpc logs.tail '{\"limit\":5}'\n  neurolink rpc subscribe '{\"topics\":[\"requests\"]}'   (prints events until stopped)"
    )]
    Rpc {
        /// hello, status, accounts.list, accounts.refresh|enable|disable|reset, auth.login.start|complete,
        /// logs.tail, config.reload, subscribe, shutdown
        method: String,
        /// The params object, as JSON
        params: Option<String>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  neurolink completions bash > ~/.local/share/bash-completion/completions/neurolink\n  \
neurolink completions zsh > \"${fpath[1]}/_neurolink\"\n  neurolink completions fish > ~/.config/fish/completions/neurolink.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), for `man -l -` or a man folder.
    #[command(
        after_help = "Example:\n  neurolink man | man -l -\n  neurolink man > ~/.local/share/man/man1/neurolink.1"
    )]
    Man,
}

#[derive(Subcommand, Debug)]
pub enum ProxyCommand {
    /// Run the proxy in the foreground until Ctrl-C or SIGTERM.
    #[command(
        long_about = "Run the proxy in the foreground until Ctrl-C or SIGTERM.\n\n\
Accounts come from $NEUROLINK_HOME/tokens.json (logins), else anthropic-credentials.json, else \
ANTHROPIC_API_KEY, plus every accounts.anthropic[] entry of the config file. Flags override the \
config file's server and routing settings.",
        after_help = "Examples:\n  neurolink proxy start\n  neurolink proxy start -p 8080 -s fill-first\n  \
ANTHROPIC_API_KEY=sk-ant-... neurolink proxy start -q"
    )]
    Start(StartArgs),
    /// Ask the running proxy to stop (in-flight answers get up to 30 s).
    Stop,
    /// Install and start the proxy as a login service (systemd user unit / launchd agent).
    #[command(
        after_help = "The service runs `neurolink proxy start` with these flags and restarts it on failure.\n\
Secrets referenced as ${VAR} in the config can go in $NEUROLINK_HOME/.env (read by the unit)."
    )]
    Install(InstallArgs),
    /// Stop and remove the login service.
    Uninstall {
        /// Print the commands instead of running them
        #[arg(long)]
        dry_run: bool,
    },
    /// First run: log in if there is no account, then install the service (or run in the foreground).
    Setup {
        #[command(flatten)]
        install: InstallArgs,
        /// Run in the foreground instead of installing a service
        #[arg(long)]
        no_service: bool,
        /// How to log in when there is no account
        #[arg(long, value_enum, default_value_t = auth::LoginMethod::Oauth)]
        method: auth::LoginMethod,
    },
    /// (internal) Watch a daemon and undo its Claude settings if it dies.
    #[command(hide = true)]
    Guard {
        #[arg(long)]
        parent_pid: u32,
        #[arg(long, default_value_t = 500)]
        poll_interval_ms: u64,
    },
    /// Show what the running proxy reports: accounts, cooldowns, counters.
    #[command(
        after_help = "Exit status: 0 running, 3 not running (as LSB status), 1 on an error."
    )]
    Status,
}

/// Where and how the proxy listens: shared by `start`, `install` and `setup`.
#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Port to listen on [default: server.port, else 55669]
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Address to listen on; anything but loopback requires server.authKey [default: 127.0.0.1]
    #[arg(short = 'H', long)]
    pub host: Option<String>,
    /// How to pick an account: keep using the first healthy one, or rotate (weighted)
    /// [default: routing.strategy, else round-robin]
    #[arg(short, long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Config file [default: $NEUROLINK_HOME/proxy-config.yaml]
    #[arg(short, long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Only print warnings and errors
    #[arg(short, long, conflicts_with = "debug")]
    pub quiet: bool,
    /// Print debug diagnostics, and log every exchange's headers and request body (secrets
    /// masked) to $NEUROLINK_HOME/logs/proxy-debug-YYYY-MM-DD.jsonl
    #[arg(short, long)]
    pub debug: bool,
    /// Do not point Claude Code's settings.json at the proxy (and start no guard)
    #[arg(long)]
    pub no_settings: bool,
    /// Seconds between the guard's health checks (accepted for compatibility with the seed)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub health_interval: u64,
}

#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Print the unit/plist and the commands instead of running them
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    FillFirst,
    RoundRobin,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::FillFirst => Strategy::FillFirst,
            StrategyArg::RoundRobin => Strategy::RoundRobin,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the config file and print the effective config, secrets masked.
    #[command(
        after_help = "Exit status: 0 valid, 1 invalid.\nExample:\n  neurolink config check --format json"
    )]
    #[command(
        after_help = "Exit status: 0 when the config is valid, 1 when it is not (or, with --strict, when it \
has warnings: unknown keys, literal secrets, links to unknown providers)."
    )]
    Check {
        /// Config file [default: $NEUROLINK_HOME/proxy-config.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Fail on warnings too (unknown keys, literal secrets, ...)
        #[arg(long)]
        strict: bool,
    },
}

pub use output::OutputFormat;

/// What every command's exit status means, unless its own help says more.
const EXIT_STATUS: &str =
    "Exit status: 0 done, 1 failed (the message says why; with --format json \
an {\"error\": {\"message\": ...}} object on stdout), 2 bad usage.";

/// The command line with every subcommand's help ending in what its exit status means: its own
/// `Exit status:` line where it has one, else the common one. `--help`, the man page and the
/// completions all come from here.
pub fn command() -> clap::Command {
    fn explain(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.mut_subcommands(explain);
        let own = cmd.get_after_help().map(|h| h.to_string());
        match own {
            Some(h) if h.contains("Exit status") => cmd,
            Some(h) => cmd.after_help(format!("{h}\n\n{EXIT_STATUS}")),
            None => cmd.after_help(EXIT_STATUS),
        }
    }
    let cmd = <Cli as clap::CommandFactory>::command();
    let top = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    cmd.mut_subcommands(explain).after_help(format!(
        "{top}\n\n{EXIT_STATUS} `proxy status` exits 3 when no proxy runs (as LSB status does); \
`doctor` and `config check` exit 1 when they find a problem."
    ))
}

/// Parse the command line. With `--format json`, a usage error is a JSON error object on stdout
/// too (exit status 2); help and version print as usual.
fn parse() -> Result<Cli, ExitCode> {
    use clap::FromArgMatches;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            let json = args
                .windows(2)
                .any(|w| w[0] == "--format" && w[1] == "json")
                || args.iter().any(|a| a == "--format=json");
            let informational = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if json && !informational {
                output::set(OutputFormat::Json);
                let detail = e.render().to_string();
                let message = detail
                    .lines()
                    .next()
                    .unwrap_or("bad usage")
                    .trim_start_matches("error: ")
                    .to_string();
                output::fail_with(message, serde_json::json!({"usage": detail.trim()}));
                return Err(ExitCode::from(2));
            }
            e.exit()
        }
    }
}

pub fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    output::set(cli.format);
    match cli.command {
        Command::Proxy(ProxyCommand::Start(args)) => proxy_start(args),
        Command::Config(ConfigCommand::Check { config, strict }) => {
            config_check(config, strict, output::format())
        }
        Command::Auth(cmd) => auth::run(cmd),
        Command::Proxy(ProxyCommand::Stop) => control::stop(),
        Command::Proxy(ProxyCommand::Install(args)) => install(&args),
        Command::Proxy(ProxyCommand::Uninstall { dry_run }) => uninstall(dry_run),
        Command::Proxy(ProxyCommand::Setup {
            install: args,
            no_service,
            method,
        }) => setup(&args, no_service, method),
        Command::Proxy(ProxyCommand::Guard {
            parent_pid,
            poll_interval_ms,
        }) => crate::guard::run(
            parent_pid,
            std::time::Duration::from_millis(poll_interval_ms.max(50)),
        ),
        Command::Proxy(ProxyCommand::Status) => control::status(output::format()),
        Command::Doctor { network } => doctor::run(output::format(), network),
        Command::Rpc { method, params } => control::rpc(&method, params.as_deref()),
        Command::Tui { socket } => tui(socket),
        Command::Demo { headless } => crate::demo::run(crate::demo::DemoOptions {
            headless: headless.map(std::time::Duration::from_secs),
        }),
        Command::Completions { shell } => {
            let mut cmd = command();
            clap_complete::generate(shell, &mut cmd, "neurolink", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => output::fail(format!("cannot write the manual page: {e}")),
            }
        }
    }
}

fn tui(socket: Option<PathBuf>) -> ExitCode {
    let options = neurolink_tui::Options {
        socket: socket.unwrap_or_else(neurolink_tui::default_socket),
        daemon_bin: std::env::current_exe().ok(),
        neurolink_home: None,
    };
    neurolink_tui::main_with(options)
}

/// `neurolink rpc logs.tail | head -1`: when the reader of our output goes away, `println!`
/// panics on the broken pipe. A command line tool stops quietly instead, with the exit status a
/// shell gives a process ended by SIGPIPE (128 + 13).
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn service_spec(args: &InstallArgs) -> anyhow::Result<crate::service::ServiceSpec> {
    let exe = std::env::current_exe()?.canonicalize()?;
    let mut argv: Vec<String> = vec!["proxy".into(), "start".into()];
    let args = &args.listen;
    if let Some(p) = args.port {
        argv.extend(["--port".into(), p.to_string()]);
    }
    if let Some(h) = &args.host {
        argv.extend(["--host".into(), h.clone()]);
    }
    if let Some(s) = args.strategy {
        argv.extend(["--strategy".into(), Strategy::from(s).as_str().into()]);
    }
    if let Some(c) = &args.config {
        let abs = std::path::absolute(c)?;
        argv.extend(["--config".into(), abs.to_string_lossy().into_owned()]);
    }
    let paths = Paths::from_env();
    let mut env = Vec::new();
    for key in ["NEUROLINK_HOME", "CLAUDE_CONFIG_DIR"] {
        if let Some(v) = std::env::var_os(key).filter(|v| !v.is_empty()) {
            env.push((
                key.to_string(),
                std::path::absolute(v)?.to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(crate::service::ServiceSpec {
        exe,
        args: argv,
        env,
        neurolink_home: paths.home,
    })
}

fn home_or_fail() -> Result<PathBuf, ExitCode> {
    neurolink_shared::paths::home_dir().ok_or_else(|| output::fail("HOME is not set"))
}

fn install(args: &InstallArgs) -> ExitCode {
    let home = match home_or_fail() {
        Ok(h) => h,
        Err(code) => return code,
    };
    let spec = match service_spec(args) {
        Ok(s) => s,
        Err(e) => return output::fail(e),
    };
    let paths = Paths::from_env();
    let mut warnings = Vec::new();
    if let Some(w) = build_folder_warning(&spec.exe) {
        warnings.push(w);
    }
    if shell_only_api_key(args.listen.config.as_deref(), &paths) {
        let asked = !args.dry_run && !output::json_wanted() && offer_to_store_the_key();
        if !asked {
            warnings.push(SHELL_ONLY_KEY.to_string());
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match crate::service::install(
        crate::service::Manager::current(),
        &spec,
        &home,
        args.dry_run,
    ) {
        Ok(report) => {
            let v = serde_json::json!({"installed": !args.dry_run, "dryRun": args.dry_run,
                                       "report": report, "warnings": warnings});
            output::done(report, v)
        }
        Err(e) => output::fail(e),
    }
}

/// The service would run a binary from a cargo build folder, which the next `cargo build` or
/// `cargo clean` replaces or removes under it.
fn build_folder_warning(exe: &std::path::Path) -> Option<String> {
    let parts: Vec<_> = exe.components().collect();
    let at = parts.iter().rposition(|c| c.as_os_str() == "target")?;
    let workspace: PathBuf = parts[..at].iter().collect();
    if !workspace.join("Cargo.toml").is_file() {
        return None;
    }
    Some(format!(
        "the service would run {}, inside a cargo build folder: the next build or `cargo clean` \
         replaces it under the running service. Install the binary first with `cargo install \
         --locked --path daemon` (it lands in ~/.cargo/bin), then run `~/.cargo/bin/neurolink \
         proxy install`",
        exe.display()
    ))
}

const SHELL_ONLY_KEY: &str = "the only account is ANTHROPIC_API_KEY from this shell, and the \
service will not have it. Store it as an account (tokens.json, mode 0600) with `neurolink auth \
login anthropic --method api-key --non-interactive` in this shell, or add accounts to the config \
file";

/// Whether the pool's only source of accounts is `ANTHROPIC_API_KEY` in this process's
/// environment (no stored login, no config account).
fn shell_only_api_key(config: Option<&std::path::Path>, paths: &Paths) -> bool {
    let Some(key) = std::env::var("ANTHROPIC_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
    else {
        return false;
    };
    let Ok(loaded) = config::load(config, paths, &EnvSource::Process) else {
        return false;
    };
    let count = |env: Option<String>| {
        crate::accounts::discover(&loaded.config, paths, env, 0)
            .specs
            .len()
    };
    count(None) == 0 && count(Some(key)) > 0
}

/// In a terminal: offer to store the shell's key where the service finds it. True when the
/// question was asked (whatever the answer), false when there is no one to ask.
fn offer_to_store_the_key() -> bool {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!(
        "The only account is ANTHROPIC_API_KEY from this shell; the service will not have it.\n\
         Store it as an account now (tokens.json, mode 0600)? [Y/n] "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    if matches!(answer.trim(), "" | "y" | "Y" | "yes") {
        let code = auth::run(auth::AuthCommand::Login {
            provider: auth::Provider::Anthropic,
            method: Some(auth::LoginMethod::ApiKey),
            add: true,
            label: None,
            non_interactive: true,
            no_verify: false,
        });
        if code != ExitCode::SUCCESS {
            eprintln!("warning: not stored; {SHELL_ONLY_KEY}");
        }
    } else {
        eprintln!("warning: not stored; {SHELL_ONLY_KEY}");
    }
    true
}

fn uninstall(dry_run: bool) -> ExitCode {
    let home = match home_or_fail() {
        Ok(h) => h,
        Err(code) => return code,
    };
    match crate::service::uninstall(crate::service::Manager::current(), &home, dry_run) {
        Ok(report) => {
            let v =
                serde_json::json!({"uninstalled": !dry_run, "dryRun": dry_run, "report": report});
            output::done(report, v)
        }
        Err(e) => output::fail(e),
    }
}

/// `proxy setup`: log in when there is no account, then install the service (or, with
/// `--no-service`, run in the foreground). `--dry-run` changes nothing, starts nothing and reads
/// no input: it prints each step it would take.
fn setup(args: &InstallArgs, no_service: bool, method: auth::LoginMethod) -> ExitCode {
    let paths = Paths::from_env();
    let accounts = config::load(args.listen.config.as_deref(), &paths, &EnvSource::Process)
        .map(|l| {
            crate::accounts::discover(
                &l.config,
                &paths,
                std::env::var("ANTHROPIC_API_KEY").ok(),
                0,
            )
            .specs
            .len()
        })
        .unwrap_or(0);
    if args.dry_run {
        return setup_dry_run(args, no_service, method, accounts);
    }
    if accounts == 0 {
        eprintln!("No account yet: logging in first.");
        let code = auth::run(auth::AuthCommand::Login {
            provider: auth::Provider::Anthropic,
            method: Some(method),
            add: true,
            label: None,
            non_interactive: false,
            no_verify: false,
        });
        if code != ExitCode::SUCCESS {
            return code;
        }
    }
    if no_service {
        return proxy_start(StartArgs {
            listen: args.listen.clone(),
            quiet: false,
            debug: false,
            no_settings: false,
            health_interval: 30,
        });
    }
    install(args)
}

fn setup_dry_run(
    args: &InstallArgs,
    no_service: bool,
    method: auth::LoginMethod,
    accounts: usize,
) -> ExitCode {
    println!("# dry run: nothing is written, started or asked");
    if accounts == 0 {
        let method = method
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        println!(
            "1. no account found: would log in with `neurolink auth login anthropic --method {method} --add` \
             (opens a browser page and waits for the code)"
        );
    } else {
        println!("1. {accounts} account(s) found: no login needed");
    }
    if no_service {
        let settings = neurolink_shared::paths::claude_settings().map_or_else(
            || "(no home folder: Claude settings would be left alone)".to_string(),
            |p| p.display().to_string(),
        );
        println!(
            "2. would run the proxy in the foreground (`neurolink proxy start`) and point Claude Code \
             at it in {settings}, restored when it stops"
        );
        return ExitCode::SUCCESS;
    }
    println!("2. would install the service:");
    install(args)
}

fn init_tracing(quiet: bool, debug: bool) {
    let default = if debug {
        "neurolink_daemon=debug,info"
    } else if quiet {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEUROLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a person at a terminal: never into files or journald, never with
    // NO_COLOR.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn proxy_start(args: StartArgs) -> ExitCode {
    init_tracing(args.quiet, args.debug);
    // One worker: it accepts connections and runs the background work (IPC, token upkeep,
    // watchers); the requests themselves are served on threads of their own (`server::run`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return output::fail(format!("cannot start the async runtime: {e}")),
    };
    let opts = StartOptions {
        config: args.listen.config,
        host: args.listen.host,
        port: args.listen.port,
        strategy: args.listen.strategy.map(Into::into),
        debug: args.debug,
        settings: !args.no_settings,
    };
    match runtime.block_on(daemon::start(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::fail(e),
    }
}

fn config_check(path: Option<PathBuf>, strict: bool, format: OutputFormat) -> ExitCode {
    let paths = Paths::from_env();
    match config::load(path.as_deref(), &paths, &EnvSource::Process) {
        Ok(loaded) => {
            let source = loaded.path.as_ref().map_or_else(
                || "(no config file; defaults)".to_string(),
                |p| p.display().to_string(),
            );
            match format {
                OutputFormat::Json => {
                    let out = serde_json::json!({
                        "valid": !strict || loaded.warnings.is_empty(),
                        "path": loaded.path,
                        "warnings": loaded.warnings,
                        "config": loaded.config,
                    });
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                }
                OutputFormat::Text => {
                    println!("config OK: {source}");
                    for w in &loaded.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("\neffective config (secrets masked):");
                    match serde_json::to_value(&loaded.config) {
                        Ok(v) => {
                            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
                        }
                        Err(e) => eprintln!("error: cannot print the config: {e}"),
                    }
                }
            }
            if strict && !loaded.warnings.is_empty() {
                // In JSON the document above already says `"valid": true` with its warnings;
                // the exit status carries the strict verdict.
                if format == OutputFormat::Text {
                    eprintln!(
                        "error: {} warning(s), and --strict fails on warnings",
                        loaded.warnings.len()
                    );
                }
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            match format {
                OutputFormat::Json => {
                    let mut out =
                        serde_json::json!({"valid": false, "error": {"message": e.to_string()}});
                    if let config::ConfigError::Invalid {
                        path,
                        line,
                        column,
                        key,
                        message,
                    } = &e
                    {
                        // Where, also at the top level (as before the error object existed).
                        let at = serde_json::json!({"path": path, "line": line, "column": column, "key": key});
                        for (k, v) in at.as_object().into_iter().flatten() {
                            out["error"][k] = v.clone();
                            out[k] = v.clone();
                        }
                        out["message"] = serde_json::json!(message);
                    }
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                }
                OutputFormat::Text => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
