//! trustlog's decision logic: strategies, backoff, cursor, envelopes.
//!
//! A plain library that also builds as the `wasm32-wasip2` component the host
//! runs; the same code serves both so wasm and native can be compared.

pub mod backoff;
pub mod cursor;
pub mod engine;
pub mod envelope;
pub mod model;
pub mod plan;
pub mod validate;

/// The wit-bindgen glue; exported as the component unless the `export` feature is off.
#[cfg(target_arch = "wasm32")]
pub mod component;
