//! GS1 DataMatrix marking codes (Asl Belgisi). Filled in by the marking work.
