//! Berth: Bay's sandbox-session driver for Kubernetes, with every Pod and PVC
//! shaped by a chain of WebAssembly policy plugins.

pub mod api;
pub mod config;
pub mod driver;
pub mod error;
pub mod harness;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod numbers;
pub mod objects;
pub mod plugin;
pub mod plugins_configmap;
pub mod quantity;
pub mod server;

pub use error::{Error, Result};
