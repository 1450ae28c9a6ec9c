fn main() {
    eprintln!("inference-bench: not implemented yet");
    std::process::exit(2);
}
