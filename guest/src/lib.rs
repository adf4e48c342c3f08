//! trustlog's decision logic: strategies, backoff, cursor, envelopes.
//!
//! A plain library that also builds as the `wasm32-wasip2` component the host
//! runs; the same code serves both so wasm and native can be compared.

#![warn(missing_docs)]

pub mod backoff;
pub mod cursor;
pub mod engine;
pub mod envelope;
pub mod envelope_batch;
pub mod model;
pub mod packed;
pub mod pipeline;
pub mod plan;
pub mod validate;

/// The wit-bindgen glue; exported as the component unless the `export` feature is off.
#[cfg(target_arch = "wasm32")]
pub mod component;

/// The component's heap: talc, not the default dlmalloc. When rows still crossed as twelve
/// strings each (before `operation-batch`), every one was an allocation; with talc the guest's share of a
/// `trustlog bench` drain fell from 15.7% to 14.8% (SQLite, 200,000 operations).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
