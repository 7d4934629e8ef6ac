//! HTTP management API (docs/operations.md): JSON bodies, errors as `{"msg": ...}`, one route table in
//! [`routes::ROUTES`] from which requests are dispatched and against which the OpenAPI document is checked.

mod auth;
pub mod client;
mod error;
mod metrics;
mod models;
mod recover;
mod request;
mod routes;
mod server;
mod tenants;
mod timelines;

pub use error::ApiError;
pub use routes::{ApiState, ROUTES, Route};
pub use server::serve;
