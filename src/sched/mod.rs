//! Rate scheduling (seed 000): per-deployment, per-upstream and per-key rpm/tpm budgets, the
//! per-model admission queue, and the token estimates that price a request.

pub mod tokens;
