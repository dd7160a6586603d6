// Replays a fuzz target's committed corpus (files or folders given as arguments) through its
// LLVMFuzzerTestOneInput, so a build without libFuzzer still runs every known input as a test.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {
int Replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << file << ": cannot open\n";
    return 1;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  std::size_t count = 0;
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    if (std::filesystem::is_directory(arg)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(arg)) {
        if (entry.is_regular_file()) {
          failures += Replay(entry.path());
          ++count;
        }
      }
    } else {
      failures += Replay(arg);
      ++count;
    }
  }
  if (count == 0) {
    std::cerr << "fuzz replay: no corpus inputs found\n";
    return 1;
  }
  std::cout << "fuzz replay: " << count << " inputs, no crash\n";
  return failures == 0 ? 0 : 1;
}
