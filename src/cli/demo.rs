//! `fleetctl demo`: see `crate::demo`.

use super::DemoArgs;

pub(super) fn run(args: DemoArgs) -> anyhow::Result<u8> {
    crate::demo::run(args.keep.as_deref())?;
    Ok(0)
}
