fn main() {
    eprintln!("inference-sim: not implemented yet");
    std::process::exit(2);
}
