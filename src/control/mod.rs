//! The control plane: everything that decides what the next snapshot is, on the control
//! runtime, apart from the workers that serve. Producers ([`sources`]) only send
//! [`update::Update`]s; [`publish`] is the only writer; [`health`] checks members.

pub mod health;
pub mod publish;
pub mod sources;
pub mod update;
