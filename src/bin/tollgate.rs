//! `tollgate`: checks a gateway config and renders the Envoy config that runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate::config::{self, secret, ConfigFile};
use tollgate::render::{self, RenderOptions};

const USAGE: &str = "\
usage:
  tollgate check CONFIG.yaml
      Validate the config; print every error with its field path.
  tollgate render CONFIG.yaml (--wasm PATH | --native PATH) [--port 4000] [--admin-port 9901]
                  [--listen 127.0.0.1] [--admin-listen 127.0.0.1]
                  [--ca-file PATH] [--timeout-secs 600] [--out envoy.yaml]
                  [--demo-provider-port PORT]
      Validate, then write the Envoy bootstrap (stdout unless --out): with
      tollgate.wasm (--wasm), or with the native build, libtollgate.so (--native).
      --demo-provider-port adds a stand-in OpenAI-compatible provider.
  tollgate hash-key KEY
      Print the sha256:<hex> form of a team key, for user_access[].api_keys.

Keys written os.environ/NAME are read from the environment, here and in Envoy.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(USAGE.to_string());
    };
    match cmd.as_str() {
        "check" => {
            let (path, _) = positional(rest)?;
            let (_, compiled) = load(&path)?;
            let gw = &compiled.gateway;
            println!(
                "{path}: ok ({} models, {} deployments, {} teams)",
                gw.models.len(),
                gw.deployments.len(),
                gw.teams.len()
            );
            Ok(())
        }
        "render" => {
            let (path, flags) = positional(rest)?;
            let (wasm, native) = match (flag(&flags, "--wasm")?, flag(&flags, "--native")?) {
                (Some(wasm), None) => (wasm, false),
                (None, Some(so)) => (so, true),
                _ => return Err("render needs --wasm PATH (tollgate.wasm), or --native PATH (libtollgate.so)".to_string()),
            };
            let wasm = std::fs::canonicalize(&wasm).map_err(|e| format!("{wasm}: {e}"))?;
            let opts = RenderOptions {
                listen_address: flag(&flags, "--listen")?.unwrap_or_else(|| "127.0.0.1".into()),
                port: number(&flags, "--port", 4000)?,
                admin_address: flag(&flags, "--admin-listen")?.unwrap_or_else(|| "127.0.0.1".into()),
                admin_port: number(&flags, "--admin-port", 9901)?,
                wasm_path: wasm.to_string_lossy().into_owned(),
                native,
                ca_file: flag(&flags, "--ca-file")?.unwrap_or_else(render::default_ca_file),
                route_timeout_secs: number(&flags, "--timeout-secs", 600)?,
                demo_provider_port: flag(&flags, "--demo-provider-port")?
                    .map(|p| p.parse().map_err(|_| format!("--demo-provider-port: {p:?} is not a port")))
                    .transpose()?,
            };
            let (file, compiled) = load(&path)?;
            if let Some(why) = native.then(|| config::native_unsupported(&compiled.gateway)).flatten() {
                return Err(format!("{path}: not for the native build\n{why}"));
            }
            let bootstrap = render::bootstrap(&file, &compiled, &opts);
            let yaml = serde_yaml_ng::to_string(&bootstrap).map_err(|e| format!("rendering failed: {e}"))?;
            match flag(&flags, "--out")? {
                Some(out) => {
                    let out = PathBuf::from(out);
                    std::fs::write(&out, yaml).map_err(|e| format!("{}: {e}", out.display()))?;
                }
                None => print!("{yaml}"),
            }
            Ok(())
        }
        "hash-key" => {
            let (key, _) = positional(rest)?;
            println!("sha256:{}", secret::to_hex(&secret::sha256(key.as_bytes())));
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}

/// Reads, checks and compiles a config file; prints warnings to stderr.
fn load(path: &str) -> Result<(ConfigFile, config::Compiled), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let file = config::parse_yaml(&text).map_err(|e| format!("{path}: invalid config\n  {e}"))?;
    let compiled = config::compile(&file, &secret::ProcessEnv).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!("{path}: invalid config\n{}", lines.join("\n"))
    })?;
    for w in &compiled.warnings {
        eprintln!("warning: {w}");
    }
    Ok((file, compiled))
}

fn positional(rest: &[String]) -> Result<(String, Vec<String>), String> {
    let (first, flags) = rest.split_first().ok_or_else(|| USAGE.to_string())?;
    if first.starts_with("--") {
        return Err(USAGE.to_string());
    }
    Ok((first.clone(), flags.to_vec()))
}

const FLAGS: [&str; 10] = [
    "--wasm",
    "--native",
    "--port",
    "--admin-port",
    "--listen",
    "--admin-listen",
    "--ca-file",
    "--timeout-secs",
    "--out",
    "--demo-provider-port",
];

/// The value of `--name VALUE`. Refuses unknown flags and flags without a value.
fn flag(flags: &[String], name: &str) -> Result<Option<String>, String> {
    let mut found = None;
    let mut iter = flags.iter();
    while let Some(f) = iter.next() {
        if !FLAGS.contains(&f.as_str()) {
            return Err(format!("unknown argument {f:?}\n\n{USAGE}"));
        }
        let value = iter.next().ok_or_else(|| format!("{f} needs a value"))?;
        if f == name {
            found = Some(value.clone());
        }
    }
    Ok(found)
}

fn number<T: std::str::FromStr>(flags: &[String], name: &str, default: T) -> Result<T, String> {
    match flag(flags, name)? {
        Some(v) => v.parse().map_err(|_| format!("{name}: {v:?} is not a valid number")),
        None => Ok(default),
    }
}
