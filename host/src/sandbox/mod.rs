//! The sandbox: the wasm engine, the component's bindings and the host functions it
//! imports, the native build of the same logic, and the limits a guest runs under.

pub mod bindings;
pub mod component_cache;
pub mod component_info;
pub mod epoch;
pub mod guest_output;
pub mod imports;
pub mod in_order;
pub mod limits;
pub mod native;
pub mod runtime;
pub mod send_line;
