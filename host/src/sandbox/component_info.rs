//! What a component says about itself: its WIT world, and the interfaces it imports.
//!
//! Another wasm runtime hosting our component needs exactly this: which imports to
//! provide, and the proof that none of them carries ambient authority.

use wit_component::WitPrinter;
use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{Resolve, WorldId, WorldKey};

/// Why a component's world could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ComponentInfoError {
    /// The bytes are not a component (a core module, a WIT package, or not wasm).
    #[error("not a wasm component: {0}")]
    NotAComponent(String),
    /// Printing the world as WIT failed.
    #[error("printing the component's WIT: {0}")]
    Print(String),
}

/// The component's world, printed as WIT: its own package first, then every package
/// its imports and exports come from.
pub fn wit(component: &[u8]) -> Result<String, ComponentInfoError> {
    let (resolve, world) = world_of(component)?;
    let own = resolve.worlds[world]
        .package
        .ok_or_else(|| ComponentInfoError::Print("the decoded world has no package".into()))?;
    let others: Vec<_> = resolve
        .packages
        .iter()
        .map(|(id, _)| id)
        .filter(|id| *id != own)
        .collect();
    let mut printer = WitPrinter::default();
    printer
        .print(&resolve, own, &others)
        .map_err(|e| ComponentInfoError::Print(format!("{e:#}")))?;
    Ok(printer.output.to_string())
}

/// The names of the interfaces the component imports, such as `wasi:io/streams@0.2.6`
/// or `trustlog:engine/db@0.1.0`, sorted.
pub fn imports(component: &[u8]) -> Result<Vec<String>, ComponentInfoError> {
    let (resolve, world) = world_of(component)?;
    let mut names: Vec<String> = resolve.worlds[world]
        .imports
        .keys()
        .map(|key| match key {
            WorldKey::Interface(id) => resolve
                .id_of(*id)
                .unwrap_or_else(|| format!("(unnamed interface {})", id.index())),
            WorldKey::Name(name) => name.clone(),
        })
        .collect();
    names.sort();
    Ok(names)
}

fn world_of(component: &[u8]) -> Result<(Resolve, WorldId), ComponentInfoError> {
    match decode(component).map_err(|e| ComponentInfoError::NotAComponent(format!("{e:#}")))? {
        DecodedWasm::Component(resolve, world) => Ok((resolve, world)),
        DecodedWasm::WitPackage(..) => Err(ComponentInfoError::NotAComponent(
            "a WIT package, not a component".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::runtime::GUEST_WASM;

    /// Interfaces that would hand the guest authority over the host's files, network
    /// or outgoing HTTP: a host may not need to provide them, and must not have to.
    const AMBIENT: [&str; 3] = ["wasi:filesystem/", "wasi:sockets/", "wasi:http/"];

    #[test]
    fn the_embedded_component_imports_no_ambient_authority() {
        let imports = imports(GUEST_WASM).unwrap();
        for name in &imports {
            assert!(
                !AMBIENT.iter().any(|a| name.starts_with(a)),
                "the component imports {name}: {imports:?}"
            );
        }
        for ours in ["db", "publisher", "log", "digest"] {
            let wanted = format!("trustlog:engine/{ours}@0.1.0");
            assert!(
                imports.contains(&wanted),
                "{wanted} missing from {imports:?}"
            );
        }
        // The rest is what wasi's preview-2 adapter needs for stdio, clocks and random
        // seeds of the Rust standard library; a new import shows up here first.
        let wasi: Vec<_> = imports.iter().filter(|n| n.starts_with("wasi:")).collect();
        for name in &wasi {
            let allowed = ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"];
            assert!(
                allowed.iter().any(|a| name.starts_with(a)),
                "unexpected import {name}: {imports:?}"
            );
        }
    }

    #[test]
    fn the_printed_world_names_the_engine_export_and_our_imports() {
        let text = wit(GUEST_WASM).unwrap();
        assert!(
            text.contains("export trustlog:engine/engine@0.1.0;"),
            "{text}"
        );
        assert!(text.contains("import trustlog:engine/db@0.1.0;"), "{text}");
        assert!(text.contains("scan-tick: func(now: micros)"), "{text}");
    }

    #[test]
    fn bytes_that_are_not_wasm_are_not_a_component() {
        assert!(matches!(
            imports(b"#!/bin/sh\necho not wasm\n"),
            Err(ComponentInfoError::NotAComponent(_))
        ));
    }
}
