//! Which world an uploaded component implements, read from its top-level exports before
//! anything is compiled, and whether its imports are ones this node offers to that world.
//! Every refusal names what is wrong.

use wasmparser::{Encoding, Parser, Payload, Validator};

use crate::plugins::{PluginError, World};

/// The package and version of every world this node runs (wit/engine.wit, wit/plugin.wit).
pub(super) const PACKAGE: &str = "vektagraf:engine";
pub(super) const VERSION: &str = "0.1.0";

/// The interface whose export makes a component of each world.
const EXPORTS: [(&str, World); 3] = [
    ("handler", World::Plugin),
    ("resolve", World::Resolver),
    ("shard", World::Engine),
];

/// The WASI 0.2 packages linked for plugins and resolvers (wasmtime-wasi's `p2`).
const WASI: [&str; 6] = [
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
];

/// The interfaces of the package each world may import (and WASI 0.2, see [`WASI`]).
fn offered(world: World) -> &'static [&'static str] {
    match world {
        World::Plugin => &["types", "errors", "read", "write", "logging"],
        World::Resolver => &["types", "errors", "logging"],
        World::Engine => &["types", "host"],
    }
}

fn rejected(m: impl Into<String>) -> PluginError {
    PluginError::Rejected(m.into())
}

/// The names of a component's top-level imports and exports.
#[derive(Debug, Default)]
struct Names {
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Reads the top-level import and export names; a core module or unreadable bytes are refused.
fn names(wasm: &[u8]) -> Result<Names, PluginError> {
    let mut names = Names::default();
    // Nesting depth: the payloads of nested modules and components come in line.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload =
            payload.map_err(|e| rejected(format!("not a valid WebAssembly component: {e}")))?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(rejected(
                    "a core WebAssembly module, not a component: build it for wasm32-wasip2 \
                     (or wrap it with `wasm-tools component new`)",
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(r) if depth == 0 => {
                for i in r {
                    let i = i.map_err(|e| rejected(format!("unreadable import section: {e}")))?;
                    names.imports.push(i.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(r) if depth == 0 => {
                for e in r {
                    let e = e.map_err(|e| rejected(format!("unreadable export section: {e}")))?;
                    names.exports.push(e.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// `ns:pkg/iface@version` as (`ns:pkg`, `iface`, version); `None` for other names.
fn split(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, iface) = path.split_once('/')?;
    Some((package, iface, version))
}

/// The world `wasm` implements, its imports checked against what this node offers.
pub(super) fn world(wasm: &[u8]) -> Result<World, PluginError> {
    let names = names(wasm)?;
    let world = world_of(&names.exports)?;
    for import in &names.imports {
        check_import(world, import)?;
    }
    Ok(world)
}

/// Runs the full validator (for engines: compiling one is the engine runtime's job, and
/// validating is much faster).
pub(super) fn validate(wasm: &[u8]) -> Result<(), PluginError> {
    Validator::new()
        .validate_all(wasm)
        .map(|_| ())
        .map_err(|e| rejected(format!("not a valid WebAssembly component: {e}")))
}

fn world_of(exports: &[String]) -> Result<World, PluginError> {
    let mut found: Vec<(World, &str)> = Vec::new();
    for e in exports {
        let Some((package, iface, version)) = split(e) else {
            continue;
        };
        let Some((_, world)) = EXPORTS.iter().find(|(i, _)| *i == iface) else {
            continue;
        };
        if package != PACKAGE {
            continue;
        }
        if version != Some(VERSION) {
            return Err(rejected(format!(
                "it exports `{e}`, but this node runs version {VERSION} of the {world} world \
                 (`{PACKAGE}/{iface}@{VERSION}`): rebuild it against that version"
            )));
        }
        found.push((*world, e));
    }
    match found.as_slice() {
        [(world, _)] => Ok(*world),
        [] => Err(rejected(format!(
            "it exports none of `{PACKAGE}/handler@{VERSION}` (a plugin), \
             `{PACKAGE}/resolve@{VERSION}` (a resolver) or `{PACKAGE}/shard@{VERSION}` (an \
             engine); its exports: {}",
            list(exports)
        ))),
        many => Err(rejected(format!(
            "it exports the interfaces of several worlds ({}); a component implements one",
            many.iter()
                .map(|(w, e)| format!("`{e}`: {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn check_import(world: World, import: &str) -> Result<(), PluginError> {
    let offers = offered(world);
    let what = || {
        format!(
            "this node offers a {world} `{}` and WASI 0.2 ({})",
            offers
                .iter()
                .map(|i| format!("{PACKAGE}/{i}@{VERSION}"))
                .collect::<Vec<_>>()
                .join("`, `"),
            WASI.join(", ")
        )
    };
    match split(import) {
        Some((package, iface, version)) if package == PACKAGE => {
            if !offers.contains(&iface) {
                return Err(rejected(format!("it imports `{import}`; {}", what())));
            }
            if version != Some(VERSION) {
                return Err(rejected(format!(
                    "it imports `{import}`, but this node runs version {VERSION} of \
                     `{PACKAGE}`: rebuild it against that version"
                )));
            }
            Ok(())
        }
        Some((package, _, version)) if WASI.contains(&package) => {
            if version.is_some_and(|v| v.starts_with("0.2.")) {
                Ok(())
            } else {
                Err(rejected(format!(
                    "it imports `{import}`; this node offers WASI 0.2 (build for wasm32-wasip2)"
                )))
            }
        }
        _ => Err(rejected(format!("it imports `{import}`; {}", what()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn refusal<T: std::fmt::Debug>(r: Result<T, PluginError>) -> String {
        match r {
            Err(PluginError::Rejected(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn worlds_by_export() {
        let w = |e: &[&str]| world_of(&names(e));
        assert_eq!(
            w(&["vektagraf:engine/handler@0.1.0"]).ok(),
            Some(World::Plugin)
        );
        assert_eq!(
            w(&["vektagraf:engine/resolve@0.1.0"]).ok(),
            Some(World::Resolver)
        );
        assert_eq!(
            w(&["vektagraf:engine/shard@0.1.0"]).ok(),
            Some(World::Engine)
        );
        // Other exports beside it do not matter.
        assert_eq!(
            w(&["other:pkg/handler@1.0.0", "vektagraf:engine/handler@0.1.0"]).ok(),
            Some(World::Plugin)
        );
        let m = refusal(w(&["vektagraf:engine/handler@0.2.0"]));
        assert!(
            m.contains("`vektagraf:engine/handler@0.2.0`") && m.contains("0.1.0"),
            "{m}"
        );
        let m = refusal(w(&["vektagraf:engine/handler"]));
        assert!(m.contains("version 0.1.0"), "{m}");
        let m = refusal(w(&["wasi:cli/run@0.2.0"]));
        assert!(
            m.contains("exports none") && m.contains("`wasi:cli/run@0.2.0`"),
            "{m}"
        );
        assert!(refusal(w(&[])).contains("its exports: none"));
        let m = refusal(w(&[
            "vektagraf:engine/handler@0.1.0",
            "vektagraf:engine/resolve@0.1.0",
        ]));
        assert!(m.contains("several worlds"), "{m}");
    }

    #[test]
    fn imports_by_world() {
        assert!(check_import(World::Plugin, "vektagraf:engine/read@0.1.0").is_ok());
        assert!(check_import(World::Plugin, "wasi:cli/stdout@0.2.6").is_ok());
        assert!(check_import(World::Engine, "vektagraf:engine/host@0.1.0").is_ok());
        let m = refusal(check_import(World::Resolver, "vektagraf:engine/read@0.1.0"));
        assert!(m.contains("imports `vektagraf:engine/read@0.1.0`"), "{m}");
        assert!(m.contains("resolver"), "{m}");
        let m = refusal(check_import(World::Plugin, "vektagraf:engine/host@0.1.0"));
        assert!(m.contains("`vektagraf:engine/host@0.1.0`"), "{m}");
        let m = refusal(check_import(World::Plugin, "vektagraf:engine/read@0.2.0"));
        assert!(m.contains("rebuild"), "{m}");
        let m = refusal(check_import(
            World::Plugin,
            "wasi:http/outgoing-handler@0.2.0",
        ));
        assert!(m.contains("wasi:io, wasi:clocks"), "{m}");
        let m = refusal(check_import(World::Plugin, "wasi:cli/stdout@0.3.0"));
        assert!(m.contains("WASI 0.2"), "{m}");
        let m = refusal(check_import(World::Plugin, "acme:db/raw@1.0.0"));
        assert!(m.contains("`acme:db/raw@1.0.0`"), "{m}");
    }
}
