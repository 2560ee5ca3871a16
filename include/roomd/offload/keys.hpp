// Room keys: argon2id hashing and checking (libsodium). Both are slow on purpose (tens of
// milliseconds and 64 MiB each): call them from the worker pool, never from the loop.
#pragma once

#include <optional>
#include <string>

namespace roomd {

// Initialises libsodium; call once at start. False: the library cannot be used.
bool keys_init();
// An "$argon2id$…" string with libsodium's interactive limits, or nothing on failure.
std::optional<std::string> hash_key(const std::string& key);
bool verify_key(const std::string& hash, const std::string& key);

}  // namespace roomd
