/* mmkit: page-mapping techniques made safe and fast. Including this header
 * brings in every module; each also has its own header. */
#ifndef MMKIT_MMKIT_H
#define MMKIT_MMKIT_H

#include <mmkit/common.h>
#include <mmkit/vm.h>
#include <mmkit/fault.h>
#include <mmkit/ring.h>
#include <mmkit/file.h>
#include <mmkit/arena.h>
#include <mmkit/sparse.h>
#include <mmkit/view.h>
#include <mmkit/advice.h>
#include <mmkit/heap.h>
#include <mmkit/map.h>

#endif
