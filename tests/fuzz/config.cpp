// parse_config on arbitrary text: it must not crash or throw; errors are data. A config it
// accepts holds together: one flags entry per listen address, and every address marked
// admin, tls or websocket is one of them.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_input.hpp"
#include "roomd/app/config.hpp"

using namespace roomd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ConfigResult result = parse_config(text, "fuzz.toml");
  for (const auto& e : result.errors) (void)e.to_string("fuzz.toml");
  if (!result.ok()) return 0;
  const auto& s = result.config.server;
  FUZZ_CHECK(s.listen.size() == s.listen_flags.size(), text);
  auto listed = [&](const std::string& a) { return std::find(s.listen.begin(), s.listen.end(), a) != s.listen.end(); };
  FUZZ_CHECK(std::all_of(s.admin.begin(), s.admin.end(), listed), text);
  FUZZ_CHECK(std::all_of(s.tls.begin(), s.tls.end(), listed), text);
  FUZZ_CHECK(std::all_of(s.websocket.begin(), s.websocket.end(), listed), text);
  return 0;
}
