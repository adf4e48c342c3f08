//! Scheduling: a tenant and its guest instance, the worker that drives its ticks, the
//! tenants of one host, the lease that lets several hosts share a database, and the
//! clock they all read.

pub mod clock;
pub mod lease;
pub mod tenant;
pub mod tenants;
pub mod worker;
