//! `canarie-agent doctor`: checks that explain a broken node.
