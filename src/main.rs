//! The `portcullis` command line: `run`, `check`, `apikey`, `seclog`,
//! `revoke` and `import`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use portcullis::auth::apikey_gen as apikey;
use portcullis::config;
use portcullis::server::{self, RunFlags};

/// mimalloc rather than glibc's malloc: a request makes dozens of small,
/// short-lived allocations (header names and values above all), and this
/// cut the public route's instructions per request by 15% and raised its
/// throughput by ~10% (README, Performance). OpenSSL keeps the system
/// allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "A security-first API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configuration.
    Run {
        /// The configuration file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Take the listening sockets over from a running instance
        /// (send it SIGQUIT once this process waits).
        #[arg(short = 'u', long)]
        upgrade: bool,
        /// Detach and run in the background (see `[server] pid_file`).
        #[arg(short = 'd', long)]
        daemon: bool,
    },
    /// Validate the configuration and every file it names, like `nginx -t`.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// API key management.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// The chained security log.
    Seclog {
        #[command(subcommand)]
        command: SeclogCommand,
    },
    /// Revoke tokens (or list or delete revocations) through the admin
    /// listener's `/revocations`.
    Revoke(RevokeArgs),
    /// Print a JSON Schema of the configuration file, for editors
    /// (Taplo, Even Better TOML) and CI linting.
    Schema {
        /// The schema of an API keys file instead.
        #[arg(long)]
        keys: bool,
    },
    /// Convert another gateway's configuration.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// A Kong declarative file (decK 3.x) into portcullis.toml and
    /// api_keys.toml (hashes only); what cannot be converted is listed on
    /// stderr, one line each.
    Kong {
        file: PathBuf,
        /// Where the files go (created if missing; existing files are kept).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SeclogCommand {
    /// Recompute the chain and check the checkpoint signatures of one or
    /// more files (oldest first). Exit 0 `ok N lines`, 1 `FILE:LINE: why`,
    /// 2 on usage errors.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The checkpoint public key (PEM); every checkpoint must then be
        /// signed by it.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Write a new checkpoint key pair: PREFIX.key (mode 0600, for
    /// `security_log_key_file`) and PREFIX.pub (for `verify --pubkey`).
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["jti", "subject", "list"])))]
struct RevokeArgs {
    /// The admin listener, e.g. http://127.0.0.1:9901.
    #[arg(long)]
    admin: String,
    /// A file holding the admin bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The token's `jti` (with --expires-at, at least the token's exp).
    #[arg(long, conflicts_with_all = ["subject", "issued_before"])]
    jti: Option<String>,
    /// Every token of this subject issued at or before --issued-before.
    #[arg(long)]
    subject: Option<String>,
    /// RFC 3339.
    #[arg(long)]
    issued_before: Option<String>,
    /// RFC 3339: when the revocation may be forgotten.
    #[arg(long)]
    expires_at: Option<String>,
    /// Delete the revocation of --jti or --subject instead.
    #[arg(long, conflicts_with = "list")]
    delete: bool,
    /// Print every revocation.
    #[arg(long)]
    list: bool,
}

impl RevokeArgs {
    fn request(self) -> server::RevokeRequest {
        let target = match (self.jti, self.subject) {
            (Some(jti), _) => Some(server::Target::Jti {
                jti,
                expires_at: self.expires_at,
            }),
            (None, Some(subject)) => Some(server::Target::Subject {
                subject,
                issued_before: self.issued_before,
                expires_at: self.expires_at,
            }),
            (None, None) => None,
        };
        let action = match target {
            Some(t) if self.delete => server::RevokeAction::Delete(t),
            Some(t) => server::RevokeAction::Add(t),
            None => server::RevokeAction::List,
        };
        server::RevokeRequest {
            admin: self.admin,
            token_file: self.token_file,
            action,
        }
    }
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Print a new key once, then the `[[keys]]` block (hash only) for the
    /// keys file.
    Generate {
        #[arg(long)]
        consumer: String,
        /// Comma-separated scopes.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// RFC 3339 expiry, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match server::check(&config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Apikey {
            command:
                ApikeyCommand::Generate {
                    consumer,
                    scopes,
                    roles,
                    expires,
                },
        } => match apikey::generate(&consumer, &scopes, &roles, expires.as_deref()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Seclog { command } => seclog(command),
        Command::Schema { keys } => match config::schema::json_schema(if keys {
            config::schema::File::Keys
        } else {
            config::schema::File::Config
        }) {
            Ok(schema) => {
                println!("{schema:#}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import {
            command: ImportCommand::Kong { file, out_dir },
        } => import_kong(&file, &out_dir),
        Command::Revoke(args) => match server::revoke(&args.request()) {
            Ok(answer) => {
                println!("{}", answer.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            upgrade,
            daemon,
        } => {
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            init_tracing(&config.log.level);
            match server::run(config, RunFlags { upgrade, daemon }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn import_kong(file: &std::path::Path, out_dir: &std::path::Path) -> ExitCode {
    match portcullis::import::kong::import(file, out_dir) {
        Ok(done) => {
            for note in &done.notes {
                eprintln!("{note}");
            }
            println!(
                "wrote {}: {} routes, {} API keys (hashed); {} constructs not converted or changed (stderr)",
                out_dir.display(),
                done.routes,
                done.keys_converted,
                done.notes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seclog(command: SeclogCommand) -> ExitCode {
    use portcullis::observe::seclog::{keys, verify};
    match command {
        SeclogCommand::Keygen { out } => match keys::generate(&out) {
            Ok((private, public)) => {
                println!("wrote {} and {}", private.display(), public.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::from(2)
            }
        },
        SeclogCommand::Verify { files, pubkey } => {
            let key = match pubkey.as_deref().map(keys::load_verifying_key).transpose() {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            match verify::verify_files(&files, key.as_ref()) {
                Ok(done) => {
                    println!("ok {} lines", done.lines);
                    if key.is_none() {
                        eprintln!("note: checkpoint signatures not checked (no --pubkey)");
                    } else if done.unsigned_tail > 0 {
                        eprintln!(
                            "note: the last {} lines come after the last checkpoint; no signature covers them",
                            done.unsigned_tail
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e @ verify::VerifyError::Read { .. }) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The gateway's own diagnostics go to stderr; access and security logs
/// have their own destinations.
///
/// Only the gateway's own lines follow `level` (or `RUST_LOG`) down to
/// `debug` and `trace`. Every library is capped at `info`, whatever is
/// asked: Pingora logs the whole request head at `trace` and the raw bytes
/// of a malformed head at `debug`, and the HTTP clients log headers at
/// `trace` — credentials included.
fn init_tracing(level: &str) {
    let own = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("portcullis={level}"));
    let library_cap = match level {
        "error" => "error",
        "warn" => "warn",
        _ => "info",
    };
    let mut filter = tracing_subscriber::EnvFilter::new(format!("{library_cap},{own}"));
    for target in CAPPED_TARGETS {
        if let Ok(directive) = format!("{target}={library_cap}").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    // Pingora logs through `log`: below the cap its debug!/trace! calls
    // are not even formatted, on every request.
    log::set_max_level(match library_cap {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    });
}

/// Libraries whose `debug`/`trace` lines can carry request bytes; capped
/// even when `RUST_LOG` names them.
const CAPPED_TARGETS: [&str; 12] = [
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "pingora_pool",
    "pingora_load_balancing",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "redis",
    "tokio_util",
];
