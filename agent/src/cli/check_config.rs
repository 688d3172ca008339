//! `bindwatch check-config FILE`: checks a configuration and says what it
//! holds; errors name the key and line.

pub fn exec(file: std::path::PathBuf) -> anyhow::Result<()> {
    let c = bindwatch::config::Config::load(&file)?;
    super::print_out(&format!(
        "{}: ok ({} watched port{}, {} alert target{})\n",
        file.display(),
        c.watch.len(),
        if c.watch.len() == 1 { "" } else { "s" },
        c.alerts.alertmanager.len() + c.alerts.webhook.len(),
        if c.alerts.alertmanager.len() + c.alerts.webhook.len() == 1 {
            ""
        } else {
            "s"
        }
    ))?;
    Ok(())
}
