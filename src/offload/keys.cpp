// Keys: argon2id via libsodium's crypto_pwhash_str.
#include "roomd/offload/keys.hpp"

#include <sodium.h>

namespace roomd {

bool keys_init() { return sodium_init() >= 0; }

std::optional<std::string> hash_key(const std::string& key) {
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, key.data(), key.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                            crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0)
    return std::nullopt;
  return std::string(out);
}

bool verify_key(const std::string& hash, const std::string& key) {
  return crypto_pwhash_str_verify(hash.c_str(), key.data(), key.size()) == 0;
}

}  // namespace roomd
