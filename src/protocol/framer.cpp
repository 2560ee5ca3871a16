// Framer is a header-only template; this file keeps one translation unit per concept.
#include "roomd/protocol/framer.hpp"
