#include "CJanssonShim.h"
