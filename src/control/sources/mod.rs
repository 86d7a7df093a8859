//! Producers of [`crate::control::update::Update`]s. They only notice change and say so; the
//! publisher decides what it means.

pub mod cluster_routes;
pub mod discovery;
pub mod endpoint_slices;
pub mod file_watch;
