# scikit-learn ships no type information; these stubs cover only what jaxmake imports.
