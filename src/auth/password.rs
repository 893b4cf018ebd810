//! Where `parity auth login` reads the app password from: the
//! `PARITY_APP_PASSWORD` variable, `--password-file FILE` (first line), or
//! a prompt without echo when stdin is a TTY. Never a flag value (argv is
//! visible to every user of the machine).

use std::io::IsTerminal;
use std::path::Path;

/// The environment variable an app password may come from.
pub const PASSWORD_ENV: &str = "PARITY_APP_PASSWORD";

/// The app password, or a one-line reason it could not be read.
pub fn read(env_value: Option<String>, file: Option<&Path>) -> Result<String, String> {
    let pw = if let Some(p) = file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read --password-file {}: {e}", p.display()))?;
        text.lines().next().unwrap_or("").to_owned()
    } else if let Some(v) = env_value {
        v
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("App password: ")
            .map_err(|e| format!("cannot read the app password: {e}"))?
    } else {
        return Err(format!(
            "no app password: set {PASSWORD_ENV}, pass --password-file FILE, or run on a terminal to be prompted"
        ));
    };
    let pw = pw.trim().to_owned();
    if pw.is_empty() {
        return Err("the app password is empty".into());
    }
    Ok(pw)
}
