//! Gantry's ingress proxy: the data plane every byte a user sends to the appliance goes through.

pub mod rule;
