fn main() {
    let code = match canarie_agent::cli::parse() {
        Ok(cli) => canarie_agent::commands::run(cli),
        Err(code) => code,
    };
    std::process::exit(code);
}
