fn main() {
    std::process::exit(canarie_agent::cli::main());
}
