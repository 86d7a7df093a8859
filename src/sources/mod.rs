//! Producers of [`crate::publish::Update`]s. They only notice change and say so; the
//! publisher decides what it means.

pub mod cluster;
pub mod file_watch;
pub mod kube;
