# CPack: `cpack -G DEB` in the build folder produces sovguard_<version>_<arch>.deb for `apt install ./`.
set(CPACK_PACKAGE_NAME sovguard)
set(CPACK_PACKAGE_VENDOR "sovguard")
set(CPACK_PACKAGE_CONTACT "sovguard maintainers <maintainers@sovguard.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libvirt-daemon-system | libvirt-daemon, swtpm, swtpm-tools, tpm-udev")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/cmake/debian/postinst ${PROJECT_SOURCE_DIR}/cmake/debian/conffiles)
set(CPACK_GENERATOR DEB)

# libvirt runs every executable in /etc/libvirt/hooks/qemu.d/ (found when libvirtd starts): the
# link makes sovguard cover a guest's taps before QEMU starts.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
file(CREATE_LINK ${CPACK_PACKAGING_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBEXECDIR}/sovguard/sovguard-libvirt-hook
     ${PROJECT_BINARY_DIR}/libvirt-hook-link SYMBOLIC)
install(FILES ${PROJECT_BINARY_DIR}/libvirt-hook-link DESTINATION /etc/libvirt/hooks/qemu.d
        RENAME sovguard)
include(CPack)
