//! `bindwatch probes`: what this kernel lets bindwatch attach.

pub fn exec(json: bool, mode: bindwatch::platform::ProbeMode) -> anyhow::Result<()> {
    super::init_logging("error");
    let report = bindwatch::cmd::probes::report(&bindwatch::platform::ProbeConfig {
        mode,
        ..Default::default()
    })?;
    let text = if json {
        serde_json::to_string(&report)? + "\n"
    } else {
        report.render()
    };
    super::print_out(&text)?;
    if !report.all_attached() {
        anyhow::bail!(
            "{} of {} hooks refused by kernel {}",
            report.hooks.len() - report.attached(),
            report.hooks.len(),
            report.kernel
        );
    }
    Ok(())
}
