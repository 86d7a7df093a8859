//! Producers of [`crate::update::Update`]s. They only notice change and say so; the
//! publisher decides what it means.

pub mod cluster;
pub mod endpoint_slices;
pub mod file_watch;
pub mod kube;
