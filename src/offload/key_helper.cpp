// KeyHelpers: argon2id checks in helper processes. See key_helper.hpp.
#include "roomd/offload/key_helper.hpp"

#include "roomd/offload/keys.hpp"

namespace roomd {

bool KeyHelpers::verify(const std::string& hash, const std::string& key) {
  auto answer = helpers_.call({hash, key});
  return answer && answer->size() == 1 && (*answer)[0] == "1";  // anything else fails closed
}

int run_key_check_helper() {
  become_idle_helper();
  if (!keys_init()) return 1;
  return serve_helper_requests([](const HelperFields& request) -> HelperFields {
    if (request.size() != 2) return {"0"};
    return {verify_key(request[0], request[1]) ? "1" : "0"};
  });
}

}  // namespace roomd
