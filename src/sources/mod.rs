//! Producers of [`crate::publish::Update`]s. They only notice change and say so; the
//! publisher decides what it means.

pub mod endpoint_slices;
pub mod file_watch;
pub mod kube;
